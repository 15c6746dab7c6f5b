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

from dataclasses import dataclass
from pathlib import PurePosixPath

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
