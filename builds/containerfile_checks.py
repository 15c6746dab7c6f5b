"""What is wrong with a Containerfile: `validate_text()` returns a `Report` of errors (which block saving a revision)
and warnings (which are shown), read with the parser in `builds.containerfile`."""

from __future__ import annotations

import json
import re

from django.conf import settings

from .containerfile import (
    HEREDOC_RE,
    Instruction,
    Parsed,
    ParseError,
    Report,
    arg_pairs,
    decode,
    env_pairs,
    expand,
    final_root,
    parse,
    split_words,
    unquote,
    variables_in,
)

INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD",
    "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}
FLAGS = {
    "FROM": {"platform"},
    "RUN": {"mount", "network", "security"},
    "COPY": {"from", "chown", "chmod", "link", "parents", "exclude"},
    "ADD": {"chown", "chmod", "checksum", "keep-git-dir", "link", "exclude"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "start-interval", "retries"},
}
EXPANDED = {"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR"}
PREDEFINED_ARGS = {
    "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT", "BUILDPLATFORM", "BUILDOS", "BUILDARCH",
    "BUILDVARIANT", "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
    "ftp_proxy", "no_proxy", "all_proxy",
}
COMMON_ENV = {"PATH", "HOME", "HOSTNAME", "TERM", "container", "USER", "PWD", "LANG"}
SECRET_NAME_RE = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|api[_-]?key|private[_-]?key|access[_-]?key|activation[_-]?key|"
    r"credential|auth|client[_-]?key|(^|_)key$)",
    re.IGNORECASE,
)
NOT_SECRET_RE = re.compile(r"(pub(lic)?[_-]?key|pubkey|_url$|_file$|_path$|_id$|keyring|keymap)", re.IGNORECASE)
IMAGE_REF_RE = re.compile(
    r"^(?:(?P<domain>[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[\w][\w.-]{0,127}))?(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}))?$"
)
PACKAGE_INSTALL_RE = re.compile(
    r"(?:^|[;&|(]\s*|\s)(?P<tool>dnf5?|yum|microdnf|apt-get|apt)\s+(?P<rest>(?:[^;&|]*?\s)?(?:group\s+)?install\b[^;&|]*)"
)
ASSUME_YES_RE = re.compile(r"(^|\s)(-y|-[a-zA-Z]*y[a-zA-Z]*|--assumeyes|--yes|--assume-yes)(\s|$)")


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


def final_base_image(text: str, build_args: dict[str, str] | None = None) -> str:
    """The image the final stage starts from (for the build record), or '' when it cannot be read."""
    report = validate_text(text, build_args=build_args)
    if report.parsed is None or not report.parsed.stages:
        return ""
    return final_root(report.parsed)[:500]
