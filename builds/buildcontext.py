"""The build context handed to podman: resolved and checked before anything runs.

A git repository can hold symbolic links, and a revision can name a sub-directory of it. podman follows a link the
context leads through: `image -> /` as the sub-directory makes the worker's whole disk the context, and a link to a file
outside (`etc/motd -> /app/.env`) is read by `COPY` or `RUN --mount=type=bind`. So before podman starts, the checkout
(or the written context files) is listed on the builder, and:

- the sub-directory is resolved inside the checkout, following the checkout's own links; if it leads outside (or
  through an absolute link) the build is refused;
- every symbolic link under the resulting context directory must resolve, through the tree's own links, to a place
  inside that directory. One that leads outside, or is absolute, or loops, refuses the build with the link and where it
  points. Links inside the tree stay as they are;
- anything but regular files, directories and such links (fifos, sockets, devices) refuses the build.

Links are resolved against the listing, never by following them on the builder, so the answer does not depend on what
happens to exist outside the tree. The listing is made with GNU find on the builder (local or over SSH) into a file of
the build's work directory, so names with any bytes in them come back exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath

from django.conf import settings

from .git import validate_git_url

KINDS = {"p": "a named pipe", "s": "a socket", "b": "a block device", "c": "a character device", "D": "a door"}
MAX_LINKS_FOLLOWED = 40  # as the kernel's ELOOP limit
SHOWN = 5


class ContextRefused(Exception):
    """The context must not be built; the message names the links or files and why."""


class LinkLoop(Exception):
    pass


@dataclass(frozen=True)
class Entry:
    kind: str  # find's %y: "l" for a symbolic link, "p", "s", "b", "c", "D"
    path: str  # relative to the checkout
    target: str = ""  # the link's text, for links


def listing_args(root: str, output: str) -> list[str]:
    """List every entry under `root` that is not a regular file or directory into `output`, NUL-separated
    (type, path relative to root, link target)."""
    return ["find", root, "-mindepth", "1", "(", "!", "-type", "f", "!", "-type", "d", ")", "-fprintf", output,
            r"%y\0%P\0%l\0"]


def parse_listing(data: bytes) -> list[Entry]:
    fields = data.split(b"\0")
    entries = []
    for i in range(0, len(fields) - 2, 3):
        kind, path, target = (f.decode("utf-8", "surrogateescape") for f in fields[i:i + 3])
        entries.append(Entry(kind=kind, path=path, target=target))
    return entries


def resolve(path: str, links: dict[str, str]) -> list[str] | None:
    """The components `path` (relative to the tree's root) resolves to, following the tree's own links as the kernel
    would; None when it leads outside the tree (through `..` or an absolute link). Raises LinkLoop."""
    done: list[str] = []
    todo = path.split("/")
    followed = 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not done:
                return None
            done.pop()
            continue
        done.append(part)
        target = links.get("/".join(done))
        if target is None:
            continue
        followed += 1
        if followed > MAX_LINKS_FOLLOWED:
            raise LinkLoop
        done.pop()
        if target.startswith("/"):
            return None
        todo = target.split("/") + todo
    return done


def check(entries: list[Entry], subdir: str = "") -> str:
    """The context directory (relative to the checkout, "" for the checkout itself) after resolving `subdir`; raises
    ContextRefused when the sub-directory or anything under it leads outside, or is not a file, directory or link."""
    links = {e.path: e.target for e in entries if e.kind == "l"}
    subdir = subdir.strip("/")
    base: list[str] = []
    if subdir:
        try:
            resolved = resolve(subdir, links)
        except LinkLoop:
            resolved = None
        if resolved is None:
            via = _first_link_on(subdir, links)
            raise ContextRefused(f"The sub-directory {subdir} leads outside the repository"
                                 + (f": {via} is a symbolic link to {links[via]}." if via else ".")
                                 + " Only the repository's own files may be built.")
        base = resolved
    prefix = "/".join(base)
    inside = [e for e in entries if not prefix or e.path == prefix or e.path.startswith(prefix + "/")]
    problems = []
    for entry in sorted(inside, key=lambda e: e.path):
        if entry.kind != "l":
            problems.append(f"{entry.path} is {KINDS.get(entry.kind, 'not a file')}")
            continue
        try:
            target = resolve(entry.path, links)
        except LinkLoop:
            problems.append(f"{entry.path} -> {entry.target} is a loop of symbolic links")
            continue
        if target is None or target[:len(base)] != base:
            problems.append(f"{entry.path} -> {entry.target} points outside the build context")
    if problems:
        shown = "; ".join(problems[:SHOWN]) + (f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else "")
        raise ContextRefused(f"The build context holds what a build may not read: {shown}. A build reads only its own "
                             "files: put the file itself in the repository, or make the link in a RUN step "
                             "(RUN ln -s ...).")
    return prefix


def _first_link_on(path: str, links: dict[str, str]) -> str:
    parts = PurePosixPath(path).parts
    for i in range(1, len(parts) + 1):
        candidate = "/".join(parts[:i])
        if candidate in links:
            return candidate
    return ""


def confine(runner, *, checkout: str, subdir: str, listing: str, watch) -> str:
    """List the checkout on the builder, check it, and return the directory podman may be given as the context."""
    runner.run(listing_args(checkout, listing), watch=watch, echo=False)
    entries = parse_listing(runner.read_file(listing))
    context = check(entries, subdir)
    watch.log("Checked the build context: only files, directories and links that stay inside it")
    return f"{checkout}/{context}" if context else checkout


# --- What a revision may name as its context -------------------------------------------------------------------------

GIT_REF_RE = re.compile(r"^(?!-)(?!.*\.\.)(?!.*//)(?!.*@\{)[A-Za-z0-9._/+-]{1,200}(?<![./])$")
SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9._@+-]+(?:/[A-Za-z0-9._@+-]+)*$")


def validate_context(*, kind: str, git_url: str = "", git_ref: str = "", git_subdir: str = "",
                     files: dict[str, bytes] | None = None) -> list[str]:
    """Errors in a revision's build context (empty list when fine)."""
    errors = []
    if kind == "git":
        problem = validate_git_url(git_url)
        if problem:
            errors.append(problem)
        if git_ref and not GIT_REF_RE.match(git_ref):
            errors.append(f"{git_ref!r} is not a branch, tag or commit name.")
        subdir = git_subdir.strip("/")
        if subdir and (not SAFE_PATH_RE.match(subdir) or ".." in subdir.split("/")):
            errors.append("The sub-directory must be a relative path inside the repository, without '..'.")
    elif kind == "files":
        files = files or {}
        if not files:
            errors.append("Add at least one context file, or choose 'Containerfile only'.")
        if len(files) > settings.BUILD_CONTEXT_MAX_FILES:
            errors.append(f"At most {settings.BUILD_CONTEXT_MAX_FILES} context files.")
        total = sum(len(content) for content in files.values())
        if total > settings.BUILD_CONTEXT_MAX_BYTES:
            errors.append(f"The context files are {total:,} bytes together; the limit is "
                          f"{settings.BUILD_CONTEXT_MAX_BYTES:,}. Use a git repository for larger contexts.")
        for path in files:
            if not SAFE_PATH_RE.match(path) or ".." in path.split("/") or path.startswith("/"):
                errors.append(f"{path!r}: use a relative path of letters, digits and . _ - + @, without '..'.")
            elif path in ("Containerfile", "Dockerfile"):
                errors.append(f"{path!r}: the Containerfile is the revision's text; do not add it as a context file.")
    elif kind != "none":
        errors.append("Unknown kind of build context.")
    return errors
