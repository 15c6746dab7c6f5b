#!/usr/bin/env bash
# Makes, from Debian's packages alone, every image compose.yaml runs, for machines that cannot pull from a registry:
#   localhost/imp-debian:bookworm   a Debian 12 minbase root file system made with mmdebstrap (debian:bookworm-slim's
#                                   equivalent), imported with `podman import`: the base of all the others
#   localhost/imp-postgres:15, localhost/imp-redis:7, localhost/imp-registry:2, localhost/imp-caddy:2
#                                   stand-ins for the official images (deploy/images/*.Containerfile)
# The portal's own images are built from the Containerfile by `podman-compose build` with BASE=localhost/imp-debian:bookworm
# (deploy/compose.local.yaml).
#
# The base's tarball is cached in $IMAGE_CACHE (default /var/cache/image-mode-portal), named by a hash of its package
# list, its mirrors and the machine's extra CA certificates, so it is made once (about 2 minutes) and imported from
# then on. Image builds reach the Debian mirror over the host's network; the layers stay in podman's store.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${IMAGE_CACHE:-/var/cache/image-mode-portal}
suite=bookworm
mirrors=(
  "deb http://deb.debian.org/debian $suite main"
  "deb http://deb.debian.org/debian $suite-updates main"
  "deb http://deb.debian.org/debian-security $suite-security main"
)
packages=$(grep -v '^#' "$here/images/base.packages" | xargs | tr ' ' ',')
# A site's own CA certificates (an HTTPS proxy's, say) go into the base, so that apt and pip inside builds trust them.
site_cas=()
for crt in /usr/local/share/ca-certificates/*.crt; do [ -f "$crt" ] && site_cas+=("$crt"); done

key=$( { echo "$suite $packages"; printf '%s\n' "${mirrors[@]}"; cat /dev/null "${site_cas[@]}"; } | sha256sum | cut -c1-16)
tarball=$cache/debian-$suite-$key.tar
mkdir -p "$cache"

step() { echo "local-images: $*"; }

exec 9>"$cache/.lock"
flock 9
if [ ! -s "$tarball" ]; then
  command -v mmdebstrap >/dev/null || { echo "local-images: mmdebstrap is missing (apt-get install -y mmdebstrap)" >&2; exit 1; }
  step "making the base root file system with mmdebstrap ($packages): $tarball"
  hooks=()
  if ((${#site_cas[@]})); then
    hooks+=(--customize-hook="copy-in ${site_cas[*]} /usr/local/share/ca-certificates"
            --customize-hook='chroot "$1" update-ca-certificates >/dev/null')
  fi
  mmdebstrap --quiet --variant=minbase --include="$packages" --format=tar \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
    "${hooks[@]}" "$suite" "$tarball.partial" "${mirrors[@]}"
  mv "$tarball.partial" "$tarball"
fi
if ! podman image exists "localhost/imp-debian:$key"; then
  step "importing the base as localhost/imp-debian:bookworm"
  podman import --quiet --change 'CMD ["/bin/bash"]' "$tarball" "localhost/imp-debian:$key" >/dev/null
fi
podman tag "localhost/imp-debian:$key" localhost/imp-debian:bookworm
flock -u 9

for service in postgres:15 redis:7 registry:2 caddy:2; do
  name=${service%%:*}
  step "building localhost/imp-$service"
  podman build --quiet --pull=never --network host --build-arg BASE=localhost/imp-debian:bookworm \
    -f "$here/images/$name.Containerfile" -t "localhost/imp-$service" "$here/images" >/dev/null
done
step "done"
