"""Containerfile parsing and validation, the way BuildKit reads the file.

Why our own parser: `dockerfile-parse` (Red Hat's, installed) does not know heredocs: it reads the body of
`COPY <<EOT ...` or `RUN <<EORUN` as instructions of their own (`[UNIT]`, `SET`, `EORUN`...), so every Containerfile with a
heredoc would get bogus "unknown instruction" errors (tests/builds/test_containerfile.py shows it on the corpus). The
`dockerfile` package (Go bindings to BuildKit's parser) needs a Go toolchain to install. The rules below follow BuildKit's
`frontend/dockerfile/parser`:

- parser directives (`# escape=`, `# syntax=`, `# check=`) only before anything else;
- a line ending in the escape character, optionally followed by spaces or tabs, continues on the next line; comment
  lines and empty lines inside a continuation are dropped; the pieces are joined as they are (no added space);
- `RUN`, `COPY` and `ADD` may open heredocs (`<<EOF`, `<<-EOF`, `<<'EOF'`, `<<"EOF"`, several per line); each body is the
  lines after the instruction up to a line equal to its name (with `<<-`, leading tabs removed first);
- ARGs before the first FROM are global and usable in FROM lines only; inside a stage they must be declared again.

What a Containerfile means (`parse()`, `expand()`, ...) is here; what is wrong with one, `validate_text()`, is in
`builds.containerfile_checks`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_BYTES = 1024 * 1024

HEREDOC_INSTRUCTIONS = {"RUN", "COPY", "ADD"}
# Instructions whose arguments the builder expands (${VAR}); RUN's are expanded by the shell at run time.
# Build args every build has without declaring them at the top (they still need `ARG X` inside a stage).
# Environment every image has, so a reference to it is not a typo.

HEREDOC_RE = re.compile(r"(?:^|\s)(\d*)<<(-?)\s*(?:(['\"])([^\s'\"<>]+)\3|([A-Za-z0-9_.-]+))(?=\s|$)")
VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


@dataclass
class Issue:
    level: str  # "error" or "warning"
    line: int
    message: str
    code: str

    def __str__(self):
        return f"line {self.line}: {self.message}" if self.line else self.message

    def as_dict(self):
        return {"level": self.level, "line": self.line, "message": self.message, "code": self.code}


@dataclass
class Heredoc:
    name: str
    body: str
    quoted: bool
    chomp: bool


@dataclass
class Instruction:
    keyword: str  # upper case
    original: str  # as written
    args: str  # the arguments, continuations joined, flags included
    line: int  # first line (1-based)
    end_line: int  # last line, heredoc bodies included
    heredocs: list[Heredoc] = field(default_factory=list)

    def flags_and_rest(self):
        """(flags {name: [values]}, the rest) for `--flag=value` words at the start of the arguments."""
        flags: dict[str, list[str]] = {}
        rest = self.args.lstrip()
        while rest.startswith("--"):
            match = re.match(r"--([A-Za-z][A-Za-z0-9-]*)(?:=((?:\"[^\"]*\"|'[^']*'|\S)*))?\s*", rest)
            if not match:
                break
            flags.setdefault(match.group(1), []).append(match.group(2) if match.group(2) is not None else "")
            rest = rest[match.end():]
        return flags, rest


@dataclass
class Stage:
    index: int
    base: str  # as written
    base_resolved: str  # ARGs expanded
    name: str
    line: int
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Parsed:
    instructions: list[Instruction]
    global_args: list[Instruction]
    stages: list[Stage]
    escape: str
    directives: dict[str, str]


@dataclass
class Report:
    text: str = ""
    parsed: Parsed | None = None
    issues: list[Issue] = field(default_factory=list)

    @property
    def errors(self):
        return [i for i in self.issues if i.level == "error"]

    @property
    def warnings(self):
        return [i for i in self.issues if i.level == "warning"]

    def add(self, level, line, code, message):
        self.issues.append(Issue(level, line, message, code))


class ParseError(Exception):
    def __init__(self, line, message, code):
        super().__init__(message)
        self.line, self.message, self.code = line, message, code


# --- Decoding --------------------------------------------------------------------------------------------------------


def decode(data: bytes | str, report: Report, *, what="The Containerfile") -> str | None:
    raw = data.encode() if isinstance(data, str) else data
    if len(raw) > MAX_BYTES:
        report.add("error", 0, "too-large", f"{what} is {len(raw):,} bytes; the limit is {MAX_BYTES:,} (1 MiB).")
        return None
    if b"\x00" in raw:
        report.add("error", 0, "not-text", f"{what} is not text (it contains NUL bytes): upload the Containerfile "
                                           "itself, not an archive or an image.")
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.add("error", 0, "not-text", f"{what} is not UTF-8 text (byte {exc.start} cannot be decoded).")
        return None
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


# --- Parsing ---------------------------------------------------------------------------------------------------------

DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*?)\s*$")


def parse(text: str) -> Parsed:
    """Parse Containerfile text into instructions and stages. Raises ParseError for what BuildKit also refuses to read."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    directives: dict[str, str] = {}
    i = 0
    while i < len(lines):
        match = DIRECTIVE_RE.match(lines[i])
        if not match or match.group(1).lower() in directives:
            break
        directives[match.group(1).lower()] = match.group(2)
        i += 1
    escape = directives.get("escape", "\\")
    if escape not in ("\\", "`"):
        raise ParseError(1, f"invalid escape directive {escape!r}: it must be \\ or `", "bad-directive")
    continuation = re.compile(re.escape(escape) + r"[ \t]*$")

    instructions: list[Instruction] = []
    while i < len(lines):
        raw = lines[i]
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start = i
        text_so_far = raw.lstrip()
        while True:
            match = continuation.search(text_so_far)
            if not match:
                break
            text_so_far = text_so_far[: match.start()]
            i += 1
            # Comment lines and empty lines inside a continuation are dropped, as BuildKit does.
            while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
                i += 1
            if i >= len(lines):
                break
            text_so_far += lines[i]
        word, _, args = text_so_far.strip().partition(" ")
        if "\t" in word:
            word, _, more = word.partition("\t")
            args = more + (" " + args if args else "")
        keyword = word.upper()
        instruction = Instruction(keyword=keyword, original=word, args=args.strip(), line=start + 1, end_line=i + 1)
        i += 1
        if keyword in HEREDOC_INSTRUCTIONS:
            for match in HEREDOC_RE.finditer(instruction.args):
                name = match.group(4) or match.group(5)
                chomp = match.group(2) == "-"
                body = []
                while True:
                    if i >= len(lines):
                        raise ParseError(instruction.line, f"the heredoc <<{name} opened here is never closed: add a "
                                                           f"line with just {name}", "unterminated-heredoc")
                    candidate = lines[i].lstrip("\t") if chomp else lines[i]
                    i += 1
                    if candidate == name:
                        break
                    body.append(candidate)
                instruction.heredocs.append(Heredoc(name=name, body="\n".join(body), quoted=bool(match.group(3)),
                                                    chomp=chomp))
            instruction.end_line = i
        instructions.append(instruction)

    global_args: list[Instruction] = []
    stages: list[Stage] = []
    defined: dict[str, str | None] = {}
    for instruction in instructions:
        if instruction.keyword == "FROM":
            flags, rest = instruction.flags_and_rest()
            words = rest.split()
            base = words[0] if words else ""
            name = ""
            if len(words) >= 3 and words[1].lower() == "as":
                name = words[2].lower()
            stages.append(Stage(index=len(stages), base=base, base_resolved=expand(base, defined), name=name,
                                line=instruction.line, instructions=[instruction]))
        elif not stages:
            if instruction.keyword == "ARG":
                for arg_name, default in arg_pairs(instruction.args):
                    defined[arg_name] = default
            global_args.append(instruction)
        else:
            stages[-1].instructions.append(instruction)
    return Parsed(instructions=instructions, global_args=global_args, stages=stages, escape=escape,
                  directives=directives)


def arg_pairs(args: str):
    """`ARG A=1 B` -> [("A", "1"), ("B", None)]. Quotes around values are removed."""
    out = []
    for word in split_words(args):
        name, eq, value = word.partition("=")
        out.append((name, unquote(value) if eq else None))
    return out


def env_pairs(args: str):
    """`ENV A=1 B=2` or the legacy `ENV A 1`."""
    words = split_words(args)
    if words and "=" not in words[0]:
        return [(words[0], args.split(None, 1)[1] if len(words) > 1 else "")]
    return [(w.partition("=")[0], unquote(w.partition("=")[2])) for w in words]


def split_words(text: str):
    """Split on whitespace outside quotes (keeping the quotes in the words)."""
    return re.findall(r"(?:\"(?:\\.|[^\"\\])*\"|'[^']*'|\\.|[^\s\"'\\])+", text)


def unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


def expand(text: str, values: dict[str, str | None]) -> str:
    """Expand $VAR, ${VAR}, ${VAR:-default}, ${VAR:+alt} as the builder does; unknown names expand to empty."""

    def replace(match):
        name = match.group(1) or match.group(4)
        op, word = match.group(2), match.group(3) or ""
        value = values.get(name)
        if op in (":-", "-"):
            return value if value else word
        if op in (":+", "+"):
            return word if value else ""
        return value or ""

    return VAR_RE.sub(replace, text)


def variables_in(text: str):
    return [(m.group(1) or m.group(4), m.group(2)) for m in VAR_RE.finditer(text)]


def final_root(parsed: Parsed) -> str:
    """The image the final stage ultimately starts from, following stage names (FROM base AS x ... FROM x)."""
    by_name = {s.name: s for s in parsed.stages if s.name}
    stage = parsed.stages[-1]
    seen = set()
    while stage.base_resolved.lower() in by_name and stage.index not in seen:
        seen.add(stage.index)
        stage = by_name[stage.base_resolved.lower()]
    return stage.base_resolved
