"""The agent of hosts that report in, as the portal hands it out: its script and systemd units (`hosts/agent/`) and its
configuration, as a Containerfile snippet (the bootc way: baked into the image, enabled at build time) and as a
kickstart `%post` section (for installs of an image that lacks it).

Files travel base64-encoded in the Containerfile (one RUN line, no heredoc: podman and buildah before 1.33 have none)
and as quoted heredocs in the kickstart (nothing in them is expanded by the installer's shell)."""

import base64
import shlex
from pathlib import Path

from portal.packages import PACKAGE_SCRIPT

AGENT_DIR = Path(__file__).resolve().parent / "agent"

SCRIPT_PATH = "/usr/libexec/portal-agent/portal-agent"
SERVICE_PATH = "/usr/lib/systemd/system/portal-agent.service"
TIMER_PATH = "/usr/lib/systemd/system/portal-agent.timer"
CONF_PATH = "/etc/portal-agent/agent.conf"


PACKAGE_SCRIPT_PLACEHOLDER = "@PACKAGE_SCRIPT@"


def script():
    """The agent, with the portal's package script (`portal.packages`: the one builds and SSH reads run) filled in."""
    return (AGENT_DIR / "portal-agent.sh").read_text().replace(PACKAGE_SCRIPT_PLACEHOLDER, shlex.quote(PACKAGE_SCRIPT))


def configuration(*, portal_url, token, heartbeat_seconds=60):
    """The agent's settings (a shell file it sources): every value single-quoted."""
    return "".join([
        "# Where the Image Mode Portal is, and the enrollment token this host presents once.\n",
        f"PORTAL_URL={shlex.quote(portal_url)}\n",
        f"ENROLLMENT_TOKEN={shlex.quote(token)}\n",
        f"HEARTBEAT_SECONDS={int(heartbeat_seconds)}\n",
        "# HOST_NAME=name-in-the-portal (default: the hostname)\n",
        "# CURL_OPTS='--cacert /etc/portal-agent/ca.pem'\n",
    ])


def files(*, portal_url, token):
    """{path on the host: (mode, text)}."""
    return {
        SCRIPT_PATH: (0o755, script()),
        SERVICE_PATH: (0o644, (AGENT_DIR / "portal-agent.service").read_text()),
        TIMER_PATH: (0o644, (AGENT_DIR / "portal-agent.timer").read_text()),
        CONF_PATH: (0o600, configuration(portal_url=portal_url, token=token)),
    }


def containerfile_snippet(*, portal_url, token):
    """Lines to add to a Containerfile: the agent, its units and its configuration, and the timer enabled."""
    steps = []
    for path, (mode, text) in files(portal_url=portal_url, token=token).items():
        encoded = base64.b64encode(text.encode()).decode()
        steps.append(f"mkdir -p {shlex.quote(str(Path(path).parent))} && echo {encoded} | base64 -d > {path} && "
                     f"chmod {mode:o} {path}")
    steps.append("systemctl enable portal-agent.timer")
    return ("# Image Mode Portal agent: reports this host's bootc status and takes the portal's actions "
            "(docs/report-in.md)\nRUN " + " && \\\n    ".join(steps) + "\n")


def kickstart_post(*, portal_url, token):
    """A kickstart `%post` section that installs the agent into the installed system."""
    lines = ["%post --erroronfail", "# Image Mode Portal agent (docs/report-in.md)"]
    for path, (mode, text) in files(portal_url=portal_url, token=token).items():
        lines += [f"mkdir -p {shlex.quote(str(Path(path).parent))}", f"cat > {path} <<'PORTAL_AGENT_EOF'",
                  text.rstrip("\n"), "PORTAL_AGENT_EOF", f"chmod {mode:o} {path}"]
    lines += ["systemctl enable portal-agent.timer", "%end"]
    return "\n".join(lines) + "\n"
