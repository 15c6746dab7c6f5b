"""Realistic log output for demos, screenshots and benchmarks: a podman build of a bootc image (with colours) and a
bootc-image-builder conversion in its `--progress verbose` format (bib's pulse lines, osbuild's pipelines and stages)."""

import hashlib

ESC = "\x1b"
GREEN, YELLOW, RED, BOLD, CYAN, DIM, RESET = (f"{ESC}[32m", f"{ESC}[33m", f"{ESC}[31m", f"{ESC}[1m", f"{ESC}[36m",
                                              f"{ESC}[2m", f"{ESC}[0m")


def _id(text, n=64):
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def podman_build(packages=40):
    """Lines of `podman build` for a bootc image: STEP lines, dnf output with colours, commits."""
    yield "Build 7 of platform/web-os, revision 3 (4f2a9c1), for linux/amd64 on builder local"
    yield "STEP 1/6: FROM quay.io/centos-bootc/centos-bootc:stream9"
    yield "STEP 2/6: RUN dnf -y install httpd mod_ssl cloud-init && dnf clean all"
    yield "CentOS Stream 9 - BaseOS                         4.1 MB/s | 8.9 MB     00:02"
    yield "CentOS Stream 9 - AppStream                      6.3 MB/s |  20 MB     00:03"
    yield "Dependencies resolved."
    yield "=" * 88
    yield f"{BOLD} Package                 Arch     Version                      Repository      Size{RESET}"
    yield "=" * 88
    yield "Installing:"
    for i in range(packages):
        name = ["httpd", "mod_ssl", "cloud-init", "apr", "apr-util", "httpd-core", "httpd-filesystem", "python3-jinja2",
                "python3-jsonpatch", "python3-oauthlib"][i % 10] + (f"-{i // 10}" if i >= 10 else "")
        yield f" {GREEN}{name:<23}{RESET} x86_64   2.4.62-{i % 7}.el9              appstream       {40 + i * 3} k"
    yield ""
    yield "Transaction Summary"
    yield "=" * 88
    yield f"Install  {packages} Packages"
    yield ""
    for i in range(packages):
        yield f"  Installing       : package-{i}.x86_64" + " " * 20 + f"{i + 1}/{packages}"
    yield f"{YELLOW}warning: /etc/httpd/conf.d/ssl.conf created as /etc/httpd/conf.d/ssl.conf.rpmnew{RESET}"
    yield f"{GREEN}Complete!{RESET}"
    yield f"--> {_id('step2', 11)}"
    yield "STEP 3/6: COPY etc/ /etc/"
    yield f"--> {_id('step3', 11)}"
    yield "STEP 4/6: RUN systemctl enable httpd.service cloud-init.service"
    yield "Created symlink /etc/systemd/system/multi-user.target.wants/httpd.service → /usr/lib/systemd/system/httpd.service."
    yield f"--> {_id('step4', 11)}"
    yield "STEP 5/6: LABEL containers.bootc=1 org.opencontainers.image.version=9.20261125.0"
    yield "STEP 6/6: RUN bootc container lint"
    yield f"{YELLOW}Lint warning: sysusers: Found /etc/passwd entry without corresponding systemd sysusers.d:{RESET}"
    yield f"{YELLOW}  apache{RESET}"
    yield f"{GREEN}Checks passed: 12{RESET}"
    yield "COMMIT registry.example.com/platform/web-os:build-7"
    yield f"--> {_id('commit', 11)}"
    yield "Successfully tagged registry.example.com/platform/web-os:build-7"
    yield _id("image")


def bib_verbose(stages=("org.osbuild.rpm", "org.osbuild.selinux", "org.osbuild.ostree.deploy.container",
                        "org.osbuild.bootc.install-to-filesystem", "org.osbuild.qemu")):
    """Lines of `bootc-image-builder --progress verbose --type qcow2`: bib's pulses, then osbuild's LogMonitor output."""
    yield "Manifest generation step"
    yield "Building manifest for bootc-based-qcow2"
    yield "Image building step"
    yield "Building manifest-qcow2.json"
    for pipeline in ("build", "image", "qcow2"):
        yield f"{BOLD}Pipeline {pipeline}: {_id(pipeline)}{RESET}"
        yield "Build"
        yield "  root: <host>"
        yield "  runner: org.osbuild.centos9 (org.osbuild.centos9)"
        for stage in stages:
            yield f"{BOLD}{stage}: {_id(pipeline + stage)}{RESET} {{"
            yield '  "paths": ['
            yield '    "/usr/share/osbuild"'
            yield "  ]"
            yield "}"
            for j in range(3):
                yield f"{DIM}[{j}/3] {stage.split('.')[-1]}: processing{RESET}"
            yield ""
            yield f"⏱  Duration: {len(stage) % 7}s"
    yield "Build complete!"
    yield "Results saved in"
    yield "/output"


def filler(n, width=100):
    """`n` plain lines of about `width` characters: bulk for benchmarks."""
    pad = "x" * max(width - 40, 0)
    for i in range(1, n + 1):
        yield f"{i:>9} compiling module_{i % 997:03d}.c -> module.o {pad}"
