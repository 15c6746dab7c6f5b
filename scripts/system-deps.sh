#!/usr/bin/env bash
# Installs the system packages the portal needs, on Debian as root; elsewhere prints the exact command to run.
#   scripts/system-deps.sh run    what `make run` uses (registry, podman, skopeo, ...)
#   scripts/system-deps.sh test   what `make test` uses (the above plus sshd, Chromium, ...)
#   scripts/system-deps.sh deploy what `make deploy-test` uses (the above plus mmdebstrap, which makes the base image)
set -euo pipefail
purpose=${1:-test}
run_pkgs=(podman buildah skopeo gnupg runc docker-registry busybox-static qemu-utils xorriso git openssh-client)
test_pkgs=("${run_pkgs[@]}" curl openssh-server chromium chromium-headless-shell apache2-utils redis-server e2fsprogs fdisk iproute2 postgresql-client prometheus qemu-system-x86
           qemu-user-static)
case "$purpose" in
  run) pkgs=("${run_pkgs[@]}") ;;
  test) pkgs=("${test_pkgs[@]}") ;;
  deploy) pkgs=("${test_pkgs[@]}" mmdebstrap) ;;
  *) echo "usage: $0 run|test|deploy" >&2; exit 2 ;;
esac

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
else
  for p in "${pkgs[@]}"; do command -v "$p" >/dev/null 2>&1 || missing+=("$p"); done
fi

if ((${#missing[@]})); then
  if [ -f /etc/debian_version ] && [ "$(id -u)" = 0 ]; then
    echo "Installing system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "Missing system packages: ${missing[*]}" >&2
    echo "Install them with:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    echo "(on Fedora: sudo dnf install -y podman buildah skopeo gnupg2 distribution busybox qemu-img openssh-server chromium chromium-headless redis)" >&2
    [ "$purpose" = run ] || exit 1
  fi
fi

# podman on these machines needs runc, cgroupfs and a low nofile limit (docs/deploy.md); install our containers.conf
# unless the machine already has one.
if [ "$(id -u)" = 0 ] && [ ! -f /etc/containers/containers.conf ] && command -v podman >/dev/null 2>&1; then
  mkdir -p /etc/containers
  cp "$(dirname "$0")/../deploy/containers.conf" /etc/containers/containers.conf
fi

# Boot tests boot images that carry a real Debian kernel (tests/diskimages/bootimages.py). Keep one vmlinuz from Debian's
# cloud kernel package, and the virtio network modules of the same kernel (the image that is logged in to over SSH
# loads them), extracted without installing the package (no initramfs hooks run on this machine).
kernel_dir=${PORTAL_TEST_KERNEL_DIR:-/var/cache/portal-tests}
if [ "$purpose" != run ] && [ "$(uname -m)" = x86_64 ] && { [ ! -s "$kernel_dir/vmlinuz" ] || [ ! -s "$kernel_dir/modules/virtio_net.ko" ]; } && command -v apt-get >/dev/null 2>&1; then
  package=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  if [ -n "$package" ] && mkdir -p "$kernel_dir/modules" 2>/dev/null; then
    scratch=$(mktemp -d)
    if (cd "$scratch" && apt-get download -qq "$package" >/dev/null 2>&1); then
      dpkg-deb --fsys-tarfile "$scratch"/*.deb | tar -x -C "$scratch" --wildcards './boot/vmlinuz-*' \
        './lib/modules/*/kernel/drivers/virtio/virtio*.ko' './lib/modules/*/kernel/drivers/net/virtio_net.ko' \
        './lib/modules/*/kernel/drivers/net/net_failover.ko' './lib/modules/*/kernel/net/core/failover.ko'
      kernel=$(ls "$scratch"/boot/vmlinuz-* | head -n 1)
      install -m 0644 "$kernel" "$kernel_dir/vmlinuz"
      find "$scratch"/lib/modules -name '*.ko' -exec install -m 0644 {} "$kernel_dir/modules/" \;
      basename "$kernel" | sed 's/^vmlinuz-//' > "$kernel_dir/version"
      echo "Test kernel: $kernel_dir/vmlinuz ($(cat "$kernel_dir/version")) and its virtio network modules"
    else
      echo "Could not download $package for the boot tests' images (apt-get download); they will be skipped." >&2
    fi
    rm -rf "$scratch"
  fi
fi

# Multi-architecture builds are tested with a real arm64 image built on this amd64 machine: qemu-user-static runs
# arm64 programs (RUN steps) through binfmt_misc, and the arm64 busybox-static from Debian is the test base's root file
# system. A new machine has binfmt_misc unmounted and nothing registered: mount it and register aarch64 from the
# package's own binfmt.d entry (F: the interpreter is opened now, so it works inside containers' mount namespaces).
if [ "$purpose" != run ] && [ "$(uname -m)" = x86_64 ] && [ "$(id -u)" = 0 ]; then
  binfmt=/proc/sys/fs/binfmt_misc
  if [ ! -e "$binfmt/register" ]; then
    mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null \
      || echo "Could not mount binfmt_misc (no privilege here?): the arm64 build tests will be skipped." >&2
  fi
  if [ -e "$binfmt/register" ] && [ ! -e "$binfmt/qemu-aarch64" ] && [ -f /usr/lib/binfmt.d/qemu-aarch64.conf ]; then
    cat /usr/lib/binfmt.d/qemu-aarch64.conf > "$binfmt/register" \
      || echo "Could not register qemu-aarch64 with binfmt_misc: the arm64 build tests will be skipped." >&2
  fi
  # Debian's arm64 busybox-static, fetched with apt lists of our own (the machine's apt configuration stays amd64).
  if [ ! -s "$kernel_dir/busybox-arm64" ] && mkdir -p "$kernel_dir" 2>/dev/null; then
    scratch=$(mktemp -d)
    mkdir -p "$scratch/lists/partial" "$scratch/cache/archives/partial"
    apt_arm64=(apt-get -qq -o "Dir::State::Lists=$scratch/lists" -o "Dir::Cache=$scratch/cache"
               -o Dir::State::status=/dev/null -o APT::Architecture=arm64 -o APT::Architectures=arm64
               -o APT::Sandbox::User=root)
    if "${apt_arm64[@]}" update >/dev/null 2>&1 \
        && (cd "$scratch" && "${apt_arm64[@]}" download busybox-static:arm64 >/dev/null 2>&1); then
      dpkg-deb --fsys-tarfile "$scratch"/busybox-static_*_arm64.deb | tar -x -C "$scratch" ./bin/busybox
      install -m 0755 "$scratch/bin/busybox" "$kernel_dir/busybox-arm64"
      echo "Test arm64 busybox: $kernel_dir/busybox-arm64"
    else
      echo "Could not download Debian's arm64 busybox-static: the arm64 build tests will be skipped." >&2
    fi
    rm -rf "$scratch"
  fi
fi
