"""A proposed revision that folds a host's runtime changes back into its image: the definition's current Containerfile
with lines appended that install the packages added on the host and copy its changed /etc files from the build
context, and a note of what it left out and why. Pure: `propose` takes a reading and a revision's text and context;
the developer reviews the result as a diff and saves it through `builds.services.revision_create`.

- Packages: one `RUN` line for the image's package manager (`dnf -y install`, `apt-get install -y`, `apk add`), each
  name checked against what package names may hold and quoted for the shell (`shlex.quote`); a name that is not a
  package name is left out with the reason. Packages removed on the host are removed the same way; packages at
  another version are left out (the image's repositories decide versions).
- Files: `COPY` in its JSON form (any path quoted) from `etc/<path>` in the build context, which the revision keeps in
  the portal. Left out: files in which something looked secret (the portal never kept their clear text), files that
  hold only secrets, machine-specific files (`machine-id`, host keys, ...), binary, large, linked and unread files.
  Deleted files become `RUN rm -f --`. A definition built from a git repository cannot take new context files: its
  files are left out, with that reason.
"""

import hashlib
import json
import re
import shlex
from dataclasses import dataclass, field

from builds.models import ContextKind

from . import etcdiff

PACKAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,199}$"
INSTALL = {"rpm": "dnf -y install", "dpkg": "apt-get install -y --no-install-recommends", "apk": "apk add --no-cache"}
REMOVE = {"rpm": "dnf -y remove", "dpkg": "apt-get remove -y", "apk": "apk del"}


@dataclass
class Proposal:
    containerfile: str
    context_kind: str
    context_files: dict = field(default_factory=dict)  # {path in the build context: bytes}
    packages: list = field(default_factory=list)
    removed_packages: list = field(default_factory=list)
    copied: list = field(default_factory=list)  # /etc paths
    deleted: list = field(default_factory=list)
    left_out: list = field(default_factory=list)  # [(what, why)]

    @property
    def changes_anything(self):
        return bool(self.packages or self.removed_packages or self.copied or self.deleted)


def _package_name_ok(name):
    return re.match(PACKAGE_NAME, name) is not None


def propose(runtime, *, host_name, containerfile, context_kind, context_files, package_format="rpm"):
    """The Proposal for `runtime` (a HostRuntime) on top of a revision's `containerfile` and build context
    (`context_kind`, `context_files`: {path: bytes})."""
    fmt = package_format if package_format in INSTALL else "rpm"
    files = dict(context_files) if context_kind != ContextKind.GIT else {}
    proposal = Proposal(containerfile="", context_kind=context_kind, context_files=files)
    for name in runtime.packages_added:
        (proposal.packages.append(name) if _package_name_ok(name) else
         proposal.left_out.append((f"package {name!r}", "not a package name: it could inject shell")))
    for name in runtime.packages_removed:
        (proposal.removed_packages.append(name) if _package_name_ok(name) else
         proposal.left_out.append((f"package {name!r}", "not a package name: it could inject shell")))
    for name, (on_host, in_image) in runtime.packages_changed.items():
        proposal.left_out.append((f"package {name} {on_host}", f"the image has {in_image}; its repositories decide "
                                                               "the version it installs"))
    for kind, path in runtime.etc_changes:
        entry = (runtime.etc_files or {}).get(path) or {}
        why = _file_left_out(path, kind, entry, context_kind)
        if why:
            proposal.left_out.append((path, why))
        elif kind == "D":
            proposal.deleted.append(path)
        else:
            files["etc/" + path.removeprefix("/etc/")] = entry["host_text"].encode()
            proposal.copied.append(path)
    if runtime.etc_total > len(runtime.etc_changes):
        proposal.left_out.append((f"{runtime.etc_total - len(runtime.etc_changes)} more paths in /etc",
                                  "the portal keeps the first ones of a reading"))
    if runtime.usr_overlay:
        proposal.left_out.append(("the /usr overlay", "only the packages installed in it are known to the portal"))
    if proposal.copied:
        proposal.context_kind = ContextKind.FILES
    proposal.containerfile = _append(containerfile, proposal, host_name, fmt)
    return proposal


def _file_left_out(path, kind, entry, context_kind):
    if etcdiff.never_read(path) or entry.get("secret_file"):
        return "holds secrets only; never read"
    if etcdiff.machine_specific(path) or entry.get("machine_specific"):
        return "belongs to this one machine"
    if kind == "D":
        return ""
    if context_kind == ContextKind.GIT:
        return "the definition builds from a git repository: add the file there"
    if not entry:
        return "not read (the portal reads the first changed files of a reading)"
    if entry.get("status") == "skipped":
        return entry.get("why", "not read")
    if entry.get("masked"):
        return "something in it looks like a secret, which the portal never keeps: add it by hand"
    if "host_text" not in entry:
        return "its text was not kept"
    return ""


def _append(containerfile, proposal, host_name, fmt):
    if not proposal.changes_anything:
        return containerfile
    lines = ["", f"# Folded back from what changed on {host_name} since it booted its image."]
    if proposal.packages:
        lines.append(f"RUN {INSTALL[fmt]} {' '.join(shlex.quote(name) for name in sorted(proposal.packages))}")
    if proposal.removed_packages:
        lines.append(f"RUN {REMOVE[fmt]} {' '.join(shlex.quote(n) for n in sorted(proposal.removed_packages))}")
    for path in sorted(proposal.copied):
        lines.append(f"COPY {json.dumps(['etc/' + path.removeprefix('/etc/'), path])}")
    if proposal.deleted:
        lines.append(f"RUN rm -f -- {' '.join(shlex.quote(path) for path in sorted(proposal.deleted))}")
    return containerfile.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


def proposal_sha256(proposal, base):
    """What the developer reviewed: the proposed Containerfile, its context files and the revision it builds on."""
    digest = hashlib.sha256(f"{base.pk}\n{proposal.context_kind}\n".encode() + proposal.containerfile.encode())
    for path, content in sorted(proposal.context_files.items()):
        digest.update(f"\n{path}\n".encode() + hashlib.sha256(content).digest())
    return digest.hexdigest()
