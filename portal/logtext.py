"""What a log line means to the viewer: sections (a Containerfile step, a bootc-image-builder stage), terminal clean-up, and
the display cut of very long lines. Pure functions and one small stateful detector; no database.

Sections are recognised from the tools' own output:

| kind       | level | line (after ANSI colours are stripped)                      | from                                     |
|------------|-------|-------------------------------------------------------------|------------------------------------------|
| `group`    | 1     | `::group::Pushing the image`                                | the portal's own runners (GitHub style)  |
| `end`      | 1     | `::endgroup::` (closes every open section)                  | the portal's own runners                 |
| `step`     | 2     | `STEP 2/5: RUN dnf -y install httpd`, `[1/2] STEP 1/3: ...` | podman/buildah build                     |
| `bib`      | 2     | `Manifest generation step`, `Image building step`           | bootc-image-builder `--progress verbose` |
| `pipeline` | 3     | `Pipeline build: 3f0c...`                                   | osbuild (bib's verbose output)           |
| `stage`    | 4     | `org.osbuild.rpm: 9a1b... {`                                | osbuild (bib's verbose output)           |

A section runs until the next section of the same or a lower level (or an `end`), so podman steps nest inside a group,
osbuild stages inside their pipeline, and pipelines inside bib's "Image building step".
"""

import re

# CSI sequences (colours, cursor movement), OSC sequences (titles, hyperlinks) and lone two-byte escapes.
ANSI_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")

LEVELS = {"group": 1, "end": 1, "step": 2, "bib": 2, "pipeline": 3, "stage": 4}
TITLE_MAX = 200

_PODMAN_STEP = re.compile(r"(?:\[\d+/\d+\] )?STEP \d+/\d+: ")
_BIB_PULSE = re.compile(r"(Manifest generation step|Image building step|Generating manifest manifest-\S+\.json|"
                        r"Building manifest-\S+\.json)$")
_OSBUILD_PIPELINE = re.compile(r"Pipeline (\S+): [0-9a-f]{16,}$")
_OSBUILD_STAGE = re.compile(r"(?:Assembler )?(org\.osbuild\.[\w.-]+): [0-9a-f]{16,} \{\}?$")
# A line can only start a section if it starts with one of these characters: most lines are rejected by one set lookup.
_FIRST_CHARS = frozenset(":S[MIGBPoA")


def strip_ansi(text):
    return ANSI_RE.sub("", text) if "\x1b" in text else text


def terminal_line(line):
    """What a terminal would show for a line rewritten with carriage returns (progress bars): its last non-empty part."""
    if "\r" not in line:
        return line
    parts = [part for part in line.split("\r") if part]
    return parts[-1] if parts else ""


def cap_line(line, limit):
    """A stored line is at most `limit` characters; the rest is dropped with a note saying how much."""
    if len(line) <= limit:
        return line
    return f"{line[:limit]} [… {len(line) - limit:,} more characters not kept]"


class SectionDetector:
    """Feeds on lines in order; `feed(line)` returns (kind, title) when the line starts or ends a section, else None."""

    def __init__(self):
        self.last_title = None

    def feed(self, line):
        if not line:
            return None
        first = line[0]
        if first == "\x1b":
            line = strip_ansi(line)
            if not line:
                return None
            first = line[0]
        if first not in _FIRST_CHARS:
            return None
        found = self._match(line)
        if found is not None:
            self.last_title = found[1]
        return found

    def _match(self, line):
        if line.startswith("::"):
            if line.startswith("::group::"):
                return "group", line[9:].strip()[:TITLE_MAX] or "Group"
            if line.startswith("::endgroup::"):
                return "end", ""
            return None
        if _PODMAN_STEP.match(line):
            return "step", line[:TITLE_MAX]
        match = _BIB_PULSE.match(line)
        if match:
            # Newer bib prints "Image building step" and then "Building manifest-qcow2.json": one section, not two.
            if line.startswith("Building manifest-") and self.last_title == "Image building step":
                return None
            return "bib", line[:TITLE_MAX]
        match = _OSBUILD_PIPELINE.match(line)
        if match:
            return "pipeline", f"Pipeline {match.group(1)}"[:TITLE_MAX]
        match = _OSBUILD_STAGE.match(line)
        if match:
            return "stage", match.group(1)[:TITLE_MAX]
        return None


def cut_for_display(lines, first, limit):
    """(lines, cut): lines longer than `limit` characters shortened to `limit`, and [[seq, full length], ...] of those cut."""
    cut = []
    out = lines
    for i, line in enumerate(lines):
        if len(line) > limit:
            if out is lines:
                out = list(lines)
            out[i] = line[:limit]
            cut.append([first + i, len(line)])
    return out, cut
