"""Containerfile templates a new definition can start from: a bootc base and what the system is for."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Base:
    key: str
    label: str
    image: str
    family: str  # "el" (dnf, RHEL-like) or "fedora"
    note: str = ""


BASES = [
    Base("centos9", "CentOS Stream 9", "quay.io/centos-bootc/centos-bootc:stream9", "el"),
    Base("centos10", "CentOS Stream 10", "quay.io/centos-bootc/centos-bootc:stream10", "el"),
    Base("rhel9", "RHEL 9", "registry.redhat.io/rhel9/rhel-bootc:9.6", "el",
         "needs a registry.redhat.io login (add a registry credential for your team)"),
    Base("rhel10", "RHEL 10", "registry.redhat.io/rhel10/rhel-bootc:10.0", "el",
         "needs a registry.redhat.io login (add a registry credential for your team)"),
    Base("fedora", "Fedora 42", "quay.io/fedora/fedora-bootc:42", "fedora"),
]

PURPOSES = {
    "container-host": (
        "Container host",
        """# A container host: podman runs the workloads, defined as quadlets under /etc/containers/systemd.
RUN dnf -y install podman skopeo cockpit-system cockpit-podman firewalld \\
    && dnf clean all \\
    && systemctl enable podman-auto-update.timer cockpit.socket firewalld
# COPY quadlets/ /etc/containers/systemd/
""",
    ),
    "edge-appliance": (
        "Edge appliance",
        """# An edge appliance: small, updates itself, falls back on a failed boot (greenboot).
RUN dnf -y install greenboot greenboot-default-health-checks NetworkManager-wifi chrony \\
    && dnf clean all \\
    && systemctl enable greenboot-healthcheck.service chronyd
# Apply updates from the registry at night, with a reboot.
RUN mkdir -p /etc/systemd/system/bootc-fetch-apply-updates.timer.d \\
    && printf '[Timer]\\nOnCalendar=*-*-* 03:00\\nRandomizedDelaySec=30min\\n' \\
       > /etc/systemd/system/bootc-fetch-apply-updates.timer.d/night.conf
""",
    ),
    "ai-ml": (
        "AI/ML stack",
        """# An AI/ML node: Python, a container runtime for model servers, and GPU tooling added per vendor.
RUN dnf -y install python3 python3-pip podman git-lfs pciutils tmux \\
    && dnf clean all
# Vendor drivers (NVIDIA, AMD ROCm) go here, built in a builder stage; see the AI examples in the docs.
# Model servers run as quadlets:
# COPY quadlets/ /etc/containers/systemd/
""",
    ),
}


def render(base_key: str, purpose_key: str) -> str:
    base = next(b for b in BASES if b.key == base_key)
    label, body = PURPOSES[purpose_key]
    note = f"# Note: {base.note}\n" if base.note else ""
    return (
        f"# {label} on {base.label} (image mode / bootc).\n{note}"
        f"FROM {base.image}\n\n{body}\n"
        "# Always last: catch mistakes at build time instead of on a host.\n"
        "RUN bootc container lint\n"
    )


def choices():
    return [("", "Start from an empty Containerfile")] + [
        (f"{b.key}:{p}", f"{b.label}: {label}") for b in BASES for p, (label, _) in PURPOSES.items()
    ]


def render_choice(value: str) -> str:
    if not value or ":" not in value:
        return ""
    base_key, purpose_key = value.split(":", 1)
    if purpose_key not in PURPOSES or base_key not in {b.key for b in BASES}:
        return ""
    return render(base_key, purpose_key)
