"""podman: the argument lists the build pipeline runs, and what it reads back (version, image facts, why a build failed).

Nothing here runs anything: a `builds.runner` runner does, locally or over SSH. Every value (build args, labels, tags)
is its own list element, so shell metacharacters reach podman literally.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from portal import failures
from portal.packages import PACKAGE_SCRIPT
from portal.text import storable


def global_args(builder) -> list[str]:
    args = ["podman"]
    if builder.podman_root:
        args += ["--root", builder.podman_root]
    if builder.podman_runroot:
        args += ["--runroot", builder.podman_runroot]
    return args


def version_args(builder) -> list[str]:
    return [*global_args(builder), "version", "--format", "json"]


def build_args(builder, *, containerfile: str, context: str, tags: list[str], labels: dict[str, str],
               build_args: dict[str, str], platform: str, iidfile: str, pull: str) -> list[str]:
    args = [*global_args(builder), "build", "--file", containerfile, f"--pull={pull}", "--platform", platform,
            "--iidfile", iidfile, "--layers"]
    for tag in tags:
        args += ["--tag", tag]
    for key, value in labels.items():
        args += ["--label", f"{key}={value}"]
    for key, value in build_args.items():
        args += ["--build-arg", f"{key}={value}"]
    return [*args, context]


def push_args(builder, *, image: str, destination: str, digestfile: str | None, authfile: str | None,
              tls_verify: bool) -> list[str]:
    args = [*global_args(builder), "push", f"--tls-verify={'true' if tls_verify else 'false'}"]
    if digestfile:
        args += ["--digestfile", digestfile]
    if authfile:
        args += ["--authfile", authfile]
    return [*args, image, f"docker://{destination}"]


def manifest_create_args(builder, name: str) -> list[str]:
    return [*global_args(builder), "manifest", "create", name]


def manifest_add_args(builder, name: str, image: str, *, authfile: str | None, tls_verify: bool) -> list[str]:
    """Add repo@sha256:... as it is in the registry: podman reads its manifest and platform, pulls nothing, and the
    list refers to exactly that digest."""
    args = [*global_args(builder), "manifest", "add", f"--tls-verify={'true' if tls_verify else 'false'}"]
    if authfile:
        args += ["--authfile", authfile]
    return [*args, name, f"docker://{image}"]


def manifest_push_args(builder, name: str, destination: str, *, authfile: str | None, tls_verify: bool,
                       digestfile: str | None) -> list[str]:
    """Push the list with every image it names (`--all`; they are in the registry already, so only the list is
    written); the digest file gets the list's own digest."""
    args = [*global_args(builder), "manifest", "push", "--all", f"--tls-verify={'true' if tls_verify else 'false'}"]
    if digestfile:
        args += ["--digestfile", digestfile]
    if authfile:
        args += ["--authfile", authfile]
    return [*args, name, f"docker://{destination}"]


def manifest_remove_args(builder, name: str) -> list[str]:
    return [*global_args(builder), "manifest", "rm", name]


def system_df_args(builder) -> list[str]:
    """Disk use per kind (images, containers, volumes), one JSON object a line (podman 4.3 has no `--format json`
    for df: it prints the word)."""
    return [*global_args(builder), "system", "df", "--format", "{{json .}}"]


def untag_args(builder, image_id: str) -> list[str]:
    """Every name of the image goes; the image itself stays while another image builds on it."""
    return [*global_args(builder), "untag", image_id]


def image_prune_args(builder) -> list[str]:
    """Dangling images only (no name, no image built on them): never the chain under a named image, which is the
    build cache of its Containerfile."""
    return [*global_args(builder), "image", "prune", "--force"]


def container_prune_args(builder) -> list[str]:
    return [*global_args(builder), "container", "prune", "--force"]


def parse_system_df(output: str) -> int:
    """Bytes the store uses (images, containers, volumes) from `system_df_args`' output."""
    total = 0
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("{"):
            size = json.loads(line).get("Size")
            total += size if isinstance(size, int) else 0
    return total


def image_inspect_args(builder, image: str) -> list[str]:
    return [*global_args(builder), "image", "inspect", "--format", "json", image]


def image_exists_args(builder, image: str) -> list[str]:
    return [*global_args(builder), "image", "exists", image]


def packages_args(builder, image: str) -> list[str]:
    return [*global_args(builder), "run", "--rm", "--pull=never", "--network=none", "--entrypoint", "/bin/sh", image,
            "-c", PACKAGE_SCRIPT]


def parse_version(output: str) -> str:
    """The client version from `podman version --format json`."""
    try:
        return storable(str(json.loads(output)["Client"]["Version"]))
    except (ValueError, KeyError, TypeError):
        match = re.search(r"Version:\s*(\S+)", output)
        return match.group(1) if match else ""


def version_tuple(version: str):
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3]) or (0,)


def supports_heredocs(version: str) -> bool:
    """Heredocs in RUN/COPY arrived with buildah 1.33, i.e. podman 4.8."""
    return version_tuple(version) >= (4, 8)


# --- Why a build failed ----------------------------------------------------------------------------------------------
# The cause and hint come from the core's failure knowledge base (portal.failures); pushes keep their own few hints,
# since a push's errors mean something else than the same words during a build (a 403 is the team's credentials).

STEP_RE = re.compile(r"^(?:\[\d+/\d+\] )?STEP (\d+)(?:/(\d+))?: (.*)$")
ERROR_RE = re.compile(r"(^Error:|^error |level=error|: error:|\berror\b.*:|^E: |failed|not found|denied|refused)",
                      re.IGNORECASE)
GIT_LOGIN = re.compile(r"Authentication failed for|could not read (Username|Password) for|terminal prompts disabled|"
                       r"HTTP Basic: Access denied|Invalid username or password", re.I)
GIT_LOGIN_HINT = ("The git repository wants a login: a team admin saves a git login for its host on the team's build "
                  "integrations page (the repository URL never holds one).")
PUSH_HINTS = [
    (re.compile(r"unauthorized|authentication required|denied|403 Forbidden|401", re.I),
     "The registry refused the push: add or fix this registry's credentials for the team (the image stays on the "
     "builder, so a retry pushes it without rebuilding)."),
    (re.compile(r"server gave HTTP response to HTTPS client|x509|certificate", re.I),
     "TLS problem with the registry: it speaks plain HTTP or its certificate is not trusted. Only a loopback "
     "development registry may be marked insecure."),
    (re.compile(r"connection refused|no such host|i/o timeout|network is unreachable", re.I),
     "The registry cannot be reached from the builder. Check its address and that it is running."),
]


@dataclass
class FailureSummary:
    step: str = ""
    error_lines: str = ""
    hint: str = ""
    headline: str = ""


def summarize_failure(lines: list[str], *, pushing=False) -> FailureSummary:
    """podman's STEP n/m that failed, its headline and last error lines, and the known cause's hint."""
    summary = FailureSummary()
    after_step = lines
    for i in range(len(lines) - 1, -1, -1):
        if STEP_RE.match(lines[i]):
            after_step = lines[i + 1:]
            break
    explanation = failures.explain("\n".join(lines[-400:]), tool="podman")
    if not pushing:
        summary.step = explanation.step[:500]
    summary.headline = explanation.headline
    interesting = [line for line in after_step if line.strip() and not line.startswith("$ ")]
    # The failing step's own last lines say most; far above them, only lines that look like errors.
    picked = interesting[-10:]
    earlier = [line for line in interesting[:-10] if ERROR_RE.search(line)][-3:]
    picked = earlier + picked
    if explanation.headline and explanation.headline not in picked:
        picked = [explanation.headline, *picked]
    summary.error_lines = "\n".join(line[:500] for line in picked)
    text = "\n".join(lines[-200:])
    if pushing:
        summary.hint = next((hint for pattern, hint in PUSH_HINTS if pattern.search(text)), "")
    elif GIT_LOGIN.search(text):
        summary.hint = GIT_LOGIN_HINT
    if not summary.hint and explanation.known:
        summary.hint = f"{explanation.title}: {explanation.hint(limit=480 - len(explanation.title))}"
    return summary
