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

`validate_text()` returns a `Report` of errors (which block saving a revision) and warnings (which are shown).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from django.conf import settings

MAX_BYTES = 1024 * 1024

INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD",
    "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}
HEREDOC_INSTRUCTIONS = {"RUN", "COPY", "ADD"}
FLAGS = {
    "FROM": {"platform"},
    "RUN": {"mount", "network", "security"},
    "COPY": {"from", "chown", "chmod", "link", "parents", "exclude"},
    "ADD": {"chown", "chmod", "checksum", "keep-git-dir", "link", "exclude"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"},
}
# Instructions whose arguments the builder expands (${VAR}); RUN's are expanded by the shell at run time.
EXPANDED = {"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}
# Build args every build has without declaring them at the top (they still need `ARG X` inside a stage).
PREDEFINED_ARGS = {
    "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "BUILDPLATFORM", "BUILDOS", "BUILDARCH",
    "BUILDVARIANT", "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
    "ftp_proxy", "no_proxy", "all_proxy",
}
# Environment every image has, so a reference to it is not a typo.
COMMON_ENV = {"PATH", "HOME", "HOSTNAME", "TERM", "container", "USER", "PWD", "LANG"}

SECRET_NAME_RE = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[_-]?key|private[_-]?key|access[_-]?key|activation[_-]?key|"
    r"credential|auth|client[_-]?key|(^|_)key$)",
    re.IGNORECASE,
)
NOT_SECRET_RE = re.compile(r"(pub(lic)?[_-]?key|pubkey|_url$|_file$|_path$|_id$|keyring|keymap)", re.IGNORECASE)
HEREDOC_RE = re.compile(r"(?:^|\s)(\d*)<<(-?)\s*(?:(['\"])([^\s'\"<>]+)\3|([A-Za-z0-9_.-]+))(?=\s|$)")
VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")
IMAGE_REF_RE = re.compile(
    r"^(?:(?P<domain>[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)
PACKAGE_INSTALL_RE = re.compile(
    r"(?:^|[;&|(]\s*|\s)(?P<tool>dnf5?|yum|microdnf|apt-get|apt)\s+(?P<rest>(?:[^;&|]*?\s)?(?:group\s+)?install\b[^;&|]*)"
)
ASSUME_YES_RE = re.compile(r"(^|\s)(-y|-[a-zA-Z]*y[a-zA-Z]*|--assumeyes|--yes|--assume-yes)(\s|$)")


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


# --- Validation ------------------------------------------------------------------------------------------------------


def known_bases():
    return list(settings.BUILD_KNOWN_BASES)


def is_known_base(image: str) -> bool:
    """Whether `image` (tag and digest aside) is one of BUILD_KNOWN_BASES: an exact repository, a prefix ending in "/",
    or a pattern with * (any characters but "/") and ? (one), e.g. registry.redhat.io/rhel*/rhel-*-bootc for the RHEL
    EUS streams."""
    name = image.split("@", 1)[0]
    repo = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    return any(_base_matches(repo, base) for base in known_bases())


def _base_matches(repo: str, base: str) -> bool:
    if "*" in base or "?" in base:
        pattern = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in base.rstrip("/"))
        return re.fullmatch(pattern + ("(?:/.*)?" if base.endswith("/") else ""), repo) is not None
    return repo == base.rstrip("/") or (base.endswith("/") and repo.startswith(base))


def validate_text(data: bytes | str, *, build_args: dict[str, str] | None = None) -> Report:
    """Every error and warning for one Containerfile. `report.text` is the decoded text when it could be read."""
    report = Report()
    text = decode(data, report)
    if text is None:
        return report
    report.text = text
    if not text.strip():
        report.add("error", 0, "no-from", "The Containerfile is empty: it needs at least a FROM line.")
        return report
    try:
        parsed = parse(text)
    except ParseError as exc:
        report.add("error", exc.line, exc.code, exc.message)
        return report
    report.parsed = parsed
    _check_instructions(parsed, report)
    if not parsed.stages:
        report.add("error", 0, "no-from", "There is no FROM line: a Containerfile starts FROM a base image, e.g. "
                                          "FROM quay.io/centos-bootc/centos-bootc:stream10.")
        return report
    _check_stages(parsed, report, build_args or {})
    report.issues.sort(key=lambda issue: (issue.level != "error", issue.line))
    return report


def _check_instructions(parsed: Parsed, report: Report):
    seen_from = False
    for ins in parsed.instructions:
        if ins.keyword not in INSTRUCTIONS:
            whole = f"{ins.original} {ins.args}".strip()
            hint = f" Did you mean `RUN {whole[:80]}`?" if re.match(r"^[a-z][a-z0-9._-]*$", ins.original) else ""
            report.add("error", ins.line, "unknown-instruction",
                       f"unknown instruction {ins.original.upper()!r}.{hint}")
            continue
        if ins.keyword == "FROM":
            seen_from = True
        elif not seen_from and ins.keyword != "ARG":
            report.add("error", ins.line, "before-from",
                       f"{ins.keyword} comes before the first FROM; only ARG may come before FROM.")
        if not ins.args and not ins.heredocs:
            report.add("error", ins.line, "missing-arguments", f"{ins.keyword} needs arguments.")
            continue
        allowed = FLAGS.get(ins.keyword, set())
        flags, rest = ins.flags_and_rest()
        for flag in flags:
            if flag not in allowed:
                report.add("error", ins.line, "unknown-flag", f"{ins.keyword} has no --{flag} option.")
        if ins.keyword in ("COPY", "ADD") and not ins.heredocs and len(split_words(rest)) < 2 and not rest.startswith("["):
            report.add("error", ins.line, "copy-arguments", f"{ins.keyword} needs a source and a destination.")
        if ins.keyword == "MAINTAINER":
            report.add("warning", ins.line, "maintainer", "MAINTAINER is deprecated: use "
                                                          "LABEL org.opencontainers.image.authors=...")
        if ins.keyword in ("ARG", "ENV"):
            pairs = arg_pairs(ins.args) if ins.keyword == "ARG" else env_pairs(ins.args)
            for name, _ in pairs:
                if SECRET_NAME_RE.search(name) and not NOT_SECRET_RE.search(name):
                    report.add("warning", ins.line, "secret-in-arg",
                               f"{ins.keyword} {name} looks like a secret: {ins.keyword} values are kept in the image "
                               "history for anyone who pulls it. Use RUN --mount=type=secret instead.")
        if ins.keyword in ("CMD", "ENTRYPOINT") and ins.args.startswith("["):
            try:
                exec_form = json.loads(ins.args)
            except ValueError:
                exec_form = None
                report.add("warning", ins.line, "exec-form-json",
                           f"{ins.keyword} looks like exec form but is not valid JSON (use double quotes), so it will "
                           "run through /bin/sh -c as a string.")
            if isinstance(exec_form, list) and exec_form and isinstance(exec_form[0], str) and " " in exec_form[0]:
                report.add("warning", ins.line, "exec-form-space",
                           f"{ins.keyword} {ins.args}: the program name {exec_form[0]!r} contains a space, so the "
                           f"container would try to run a file of that name. Split it: "
                           f"{json.dumps(exec_form[0].split() + exec_form[1:])}.")
        if ins.keyword == "RUN":
            _check_run(ins, flags, rest, parsed.escape, report)
        _check_from_is_no_path(ins, flags, report)


def _check_from_is_no_path(ins: Instruction, flags, report: Report):
    """`COPY --from=` and `RUN --mount=...,from=` name a stage or an image. A path there would be a directory of the
    builder (podman reads one only as a --build-context, which the portal never passes): say so instead of letting the
    builder guess."""
    values = list(flags.get("from", [])) if ins.keyword == "COPY" else []
    if ins.keyword == "RUN":
        for mount in flags.get("mount", []):
            options = dict(part.partition("=")[::2] for part in unquote(mount).split(","))
            if "from" in options:
                values.append(options["from"])
    for value in values:
        value = unquote(value)
        if value.startswith(("/", ".", "~")) or "://" in value:
            report.add("error", ins.line, "from-path",
                       f"{ins.keyword} ... from={value} names a path or URL; it must name an earlier stage or an "
                       "image. Only the build context (the revision's files or its git checkout) is readable by a "
                       "build: COPY the file from there instead.")


def _check_run(ins: Instruction, flags, rest, escape, report: Report):
    scripts = [rest] + [h.body for h in ins.heredocs]
    for script in scripts:
        for match in PACKAGE_INSTALL_RE.finditer(script):
            words = match.group("rest")
            if not ASSUME_YES_RE.search(words) and not ASSUME_YES_RE.search(script[: match.start()].rsplit("&&", 1)[-1]):
                tool = match.group("tool")
                report.add("warning", ins.line, "install-without-yes",
                           f"`{tool} {' '.join(words.split()[:4])}` has no -y: a build has no one to answer the "
                           f"confirmation prompt, so {tool} stops there and the step fails.")
                break
        if re.search(r"\bostree\s+container\s+commit\b", script):
            report.add("warning", ins.line, "ostree-container-commit",
                       "`ostree container commit` is no longer needed for bootc images: end with "
                       "`RUN bootc container lint` instead.")
    _check_heredoc_use(ins, rest, report)
    # A backslash followed by a space in the middle of a line (not a continuation): the shell sees an escaped space.
    if re.search(re.escape(escape) + r" +\S", rest) and not ins.heredocs:
        report.add("warning", ins.line, "midline-backslash",
                   f"`{escape} ` in the middle of the line is not a line continuation: the shell gets an escaped space "
                   "as an extra argument. Remove it, or break the line after the backslash.")
    for mount in flags.get("mount", []):
        options = dict(part.partition("=")[::2] for part in mount.split(","))
        if options.get("type") == "secret":
            secret_id = options.get("id") or options.get("target", "").rsplit("/", 1)[-1] or "?"
            report.add("warning", ins.line, "needs-secret",
                       f"this step mounts the build secret {secret_id!r}; the portal passes no build secrets, so the "
                       "file will be missing" + (" and the step fails (required=true)." if options.get("required") in
                                                ("true", "") and "required" in options else "."))


SHELL_OPERATOR_RE = re.compile(r"&&|\|\||;|\||\(|\)")
SH_SHEBANG_RE = re.compile(r"^#!\s*(?:/usr)?/bin/(?:env\s+)?sh\s*$")


def _check_heredoc_use(ins: Instruction, rest: str, report: Report):
    """Heredocs that do not run what their author meant.

    - `RUN cmd && <<EOF` with no command for the heredoc: the shell reads the body as the input of an empty command and
      throws it away, so the step "succeeds" without running it (a real case: konflux-ci/build-definitions#1200).
    - `RUN <<EOF` whose body starts with a shebang: podman and buildah before buildah's fix (containers/buildah#5251,
      fixed by #5255 in January 2024) ignore the shebang and run the body with /bin/sh."""
    if not ins.heredocs:
        return
    markers = list(HEREDOC_RE.finditer(rest))
    for match in markers:
        before = SHELL_OPERATOR_RE.split(rest[: match.start()])[-1]
        after = SHELL_OPERATOR_RE.split(rest[match.end():])[0]
        # Other redirections (`5<<EOF2`, `> file`) around it are no command either.
        words = [w for w in split_words(before + " " + after) if not re.match(r"^\d*(?:<<-?|[<>]+)", w)]
        if rest[: match.start()].strip() and not words:
            name = match.group(4) or match.group(5)
            report.add("warning", ins.line, "heredoc-no-command",
                       f"<<{name} follows a shell operator with no command to read it, so the shell discards the "
                       f"heredoc and its body never runs. Name the interpreter: `... && /bin/sh <<{name}` (or "
                       f"`bash <<{name}`).")
    script_form = len(markers) == 1 and all(re.match(r"^\d*<<", w) for w in split_words(rest))
    if script_form:
        first_line = ins.heredocs[0].body.lstrip("\n").split("\n", 1)[0].strip()
        if first_line.startswith("#!") and not SH_SHEBANG_RE.match(first_line):
            interpreter = first_line[2:].strip()
            report.add("warning", ins.line, "heredoc-shebang",
                       f"the heredoc starts with {first_line!r}, but podman and buildah before buildah's heredoc "
                       f"shebang fix (containers/buildah#5251, January 2024) ignore it and run the body with /bin/sh. "
                       f"Name the interpreter on the RUN line so every builder agrees: `RUN {interpreter} <<"
                       f"{ins.heredocs[0].name}`.")


def _check_stages(parsed: Parsed, report: Report, build_args: dict[str, str]):
    global_values: dict[str, str | None] = {}
    for ins in parsed.global_args:
        for name, default in arg_pairs(ins.args):
            global_values[name] = build_args.get(name, default)
    names = {}
    for stage in parsed.stages:
        from_ins = stage.instructions[0]
        if stage.name:
            if stage.name in names:
                report.add("error", stage.line, "duplicate-stage", f"stage name {stage.name!r} is used twice "
                                                                   f"(first on line {names[stage.name].line}).")
            else:
                names[stage.name] = stage
        undefined = [var for var, op in variables_in(stage.base) if var not in global_values
                     and var not in build_args and var not in PREDEFINED_ARGS and op not in (":-", "-")]
        for var in undefined:
            report.add("error", stage.line, "undefined-from-arg",
                       f"FROM uses ${{{var}}}, which no ARG before the first FROM defines.")
        if undefined:
            continue
        base = expand(stage.base, {**global_values, **build_args})
        stage.base_resolved = base
        if not base:
            report.add("error", stage.line, "bad-from", "FROM needs an image name.")
            continue
        if base.lower() == "scratch" or base.lower() in names and names[base.lower()] is not stage:
            continue
        if "<" in base or ">" in base or "..." in base:
            written = from_ins.flags_and_rest()[1]
            written = re.split(r"\s+as\s+", written, flags=re.IGNORECASE)[0] if ">" in written else base
            report.add("error", stage.line, "placeholder-from",
                       f"FROM {written} is a placeholder, not an image: put the real base image here, e.g. "
                       "quay.io/centos-bootc/centos-bootc:stream10.")
            continue
        match = IMAGE_REF_RE.match(base)
        if not match:
            report.add("error", stage.line, "bad-from", f"FROM {base}: not a valid image reference.")
            continue
        if not match.group("digest") and match.group("tag") in (None, "latest"):
            report.add("warning", stage.line, "latest-base",
                       f"FROM {base} follows {'the latest tag' if match.group('tag') else 'latest (no tag given)'}: "
                       "two builds of the same revision may get different bases. Pin a version tag or a digest.")
    _check_variables(parsed, report, build_args)
    _check_args_without_value(parsed, report, build_args)
    final = parsed.stages[-1]
    root = final_root(parsed)
    if root and root.lower() != "scratch" and IMAGE_REF_RE.match(root) and not is_known_base(root):
        report.add("warning", final.line, "unknown-base",
                   f"{root} is not a known bootc base image (the list is BUILD_KNOWN_BASES). Hosts can only boot "
                   "images built FROM a bootc base.")
    # Anywhere, not only in the final stage: sealed builds lint the final tree from another stage (--rootfs).
    if not any(
        ins.keyword == "RUN" and re.search(r"\bbootc\s+container\s+lint\b", ins.args + " ".join(h.body for h in ins.heredocs))
        for ins in parsed.instructions
    ):
        report.add("warning", final.line, "no-lint",
                   "There is no `RUN bootc container lint` step: add it as the last RUN so mistakes show up at build "
                   "time instead of on a host.")


def _check_variables(parsed: Parsed, report: Report, build_args):
    """Warn about ${VAR} the builder expands (LABEL, COPY, ENV...) that the stage never declares."""
    envs_by_stage: dict[str, set[str]] = {}
    for stage in parsed.stages:
        parent = envs_by_stage.get(stage.base.lower(), set())
        declared = set(parent)
        for ins in stage.instructions[1:]:
            if ins.keyword in EXPANDED:
                for var, op in variables_in(ins.args):
                    if var not in declared and var not in COMMON_ENV and op not in (":-", "-", ":+", "+"):
                        hint = " (an ARG before the first FROM must be declared again, with ARG, inside the stage)" if any(
                            name == var for g in parsed.global_args for name, _ in arg_pairs(g.args)) else ""
                        report.add("warning", ins.line, "undeclared-variable",
                                   f"{ins.keyword} uses ${{{var}}}, which this stage does not declare with ARG or ENV, "
                                   f"so it expands to nothing{hint}.")
            if ins.keyword == "ARG":
                declared.update(name for name, _ in arg_pairs(ins.args))
            elif ins.keyword == "ENV":
                declared.update(name for name, _ in env_pairs(ins.args))
        if stage.name:
            envs_by_stage[stage.name] = declared


def _check_args_without_value(parsed: Parsed, report: Report, build_args):
    """Warn about `ARG NAME` without a default that nothing gives a value (not the definition's build args, not a global
    ARG with a default) while a later instruction of the stage uses it unguarded: it expands to nothing in this build
    (e.g. `echo ${SSHPUBKEY} > /usr/ssh/root.keys` writes an empty key). Uses with a default (`${NAME:-x}`) or behind a
    test (`if [ -n "${NAME}" ]`) are deliberate and fine."""
    global_defaults: dict[str, str | None] = {}
    for ins in parsed.global_args:
        for name, default in arg_pairs(ins.args):
            global_defaults[name] = default
    for stage in parsed.stages:
        pending: dict[str, Instruction] = {}
        for ins in stage.instructions[1:]:
            text = " ".join([ins.args, *(h.body for h in ins.heredocs)])
            for name, declared in list(pending.items()):
                uses = [op for var, op in variables_in(text) if var == name]
                if not uses:
                    continue
                del pending[name]
                # A use with a default, a test (-n/-z), or a comparison with "" that exits non-zero (the
                # Containerfile checks the ARG itself) is deliberate.
                guarded = (any(uses) or re.search(r"-[nz]\s+[\"']?\$\{?" + re.escape(name) + r"\b", text)
                           or _exits_when_empty(name, text))
                if not guarded:
                    report.add("warning", declared.line, "arg-without-value",
                               f"ARG {name} has no default and the definition's build args do not set it, so "
                               f"{ins.keyword} on line {ins.line} gets an empty ${{{name}}}. Add {name}=... to the "
                               "definition's build args, or give the ARG a default.")
            if ins.keyword == "ARG":
                for name, default in arg_pairs(ins.args):
                    if (default is None and name not in build_args and name not in PREDEFINED_ARGS
                            and global_defaults.get(name) is None):
                        pending[name] = ins
                    else:
                        pending.pop(name, None)


def _exits_when_empty(name: str, text: str) -> bool:
    """`[ "${NAME}" = "" ]`, `[ "" == "$NAME" ]` or `[ ! "$NAME" ]` followed by `exit N` (N > 0) within the check."""
    var = r"[\"']?\$\{?" + re.escape(name) + r"\}?[\"']?"
    empty_test = rf"(?:{var}\s*==?\s*(?:\"\"|'')|(?:\"\"|'')\s*==?\s*{var}|\[\[?\s*!\s*{var})"
    return re.search(empty_test + r".{0,200}?\bexit\s+[1-9]", text, re.DOTALL) is not None


def final_root(parsed: Parsed) -> str:
    """The image the final stage ultimately starts from, following stage names (FROM base AS x ... FROM x)."""
    by_name = {s.name: s for s in parsed.stages if s.name}
    stage = parsed.stages[-1]
    seen = set()
    while stage.base_resolved.lower() in by_name and stage.index not in seen:
        seen.add(stage.index)
        stage = by_name[stage.base_resolved.lower()]
    return stage.base_resolved


def final_base_image(text: str, build_args: dict[str, str] | None = None) -> str:
    """The image the final stage starts from (for the build record), or '' when it cannot be read."""
    report = validate_text(text, build_args=build_args)
    if report.parsed is None or not report.parsed.stages:
        return ""
    return final_root(report.parsed)[:500]
