"""Why a run failed, from its log: the failure knowledge base and the one explainer builds, conversions, host commands,
the "explain this log" page and `manage.py explain_log` share.

The knowledge base is data (`portal/failure_rules.toml`, one `[[rule]]` per known cause, ordered from the most specific
to the most general; see docs/failures.md for how to add one). A feature app may add rules of its own with
`portal.registry.failure_rules()` from its `AppConfig.ready()`; they are tried before the core's.

The explainer reads a log as a person would:

- lines a tool or a harness echoes (`$ podman run ...`, `Command '...'`, `Running: ...`, `+ bootc ...`) and the inside of
  Python tracebacks and Go goroutine dumps are never the headline;
- the first rule whose patterns match names the cause, and its `headline` pattern picks the line to show;
- a rule may also need a fact about the run that its log does not hold (`when`): the caller passes the facts it knows
  (a conversion: what its own bib config asks for), so two causes that print the same line are told apart, and a pasted
  log, whose run is not known, gets the rule that needs no fact;
- no rule matches: the headline is the last error-level line of the failing step;
- a run that succeeded (exit 0) is never a failure: rules of severity "warning" (bootc container lint without
  `--fatal-warnings`) explain it as a success with warnings, and nothing else does.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

RULES_FILE = Path(__file__).with_name("failure_rules.toml")

# Outcomes.
FAILED = "failed"
WARNINGS = "warnings"
SUCCEEDED = "succeeded"

HEADLINE_MAX = 500

# ANSI colour codes as the log has them: real escapes, and the `^[[1m` / `\e[0m` / `\033[0m` a tracker kept as text.
_ANSI = re.compile(r"(?:\x1b|\^\[|\\e|\\033|\\x1b)\[[0-9;?]*[A-Za-z]")
# Lines that repeat a command rather than report on it: a shell prompt, set -x, and harnesses that print what they run.
_ECHOED = re.compile(r"^\s*(?:\$ |# |\+ |\[[^\]\s]+@[^\]]+\][#$] |\(\S+\) \[[^\]\s]+@[^\]]+\][#$] |[\w.-]+@[\w.-]+:\S*[#$] |"
                     r"\[\d+\][\w.-]+@[\w.-]+:\S*[#$] |Command '|Running '|Running: |Running\.\.\. |"
                     r"INFO:program:Running)")
_TRACEBACK_START = re.compile(r"(?:^|: )Traceback \(most recent call last\):\s*$")
_TRACEBACK_FRAME = re.compile(r"^\s+(File \"|\S.*)|^\s*$")
_GOROUTINE = re.compile(r"^goroutine \d+ \[")
_GO_FRAME = re.compile(r"^(\s+/|\S+\(.*\)$|\S+\.\S+\(|created by |\s*$)")
_PODMAN_STEP = re.compile(r"^(?:\[\d+/\d+\] )?STEP (\d+)(?:/(\d+))?: (.*)$")
_OSBUILD_STAGE = re.compile(r"^(?:Assembler )?(org\.osbuild\.[\w.-]+): [0-9a-f]{16,}")
# What counts as an error line when no rule knows the cause.
_ERROR_LEVEL = re.compile(r"^\s*(?:\S+ )?(?:error|Error|ERROR|ERR|ERRO\[\d+\]|fatal|FATAL|panic|E:)\b|level=(?:error|fatal)|"
                          r"\berror:|\bError:|\bfailed\b|\bFailed\b|not found|denied|No such file|cannot|can't")
_NOT_ERROR = re.compile(r"^\s*(?:\S+ )?(?:WARN|WARNING|warning|DEBU|INFO)\b(?!.*\berror:)|level=(?:warning|info|debug)|"
                        r"^\s*\d+ errors?; |^Failed$|finished successfully|Checks passed")
# What a line says once its level word and anything before it are set aside: "Error: cannot build" and
# "2024/06/24 11:39:39 error: cannot build" say the same thing.
_MESSAGE = re.compile(r"^.*?\b(?:error|Error|ERROR|fatal|FATAL)\b:?\s*(.{20,})$")
# The last words of a run that committed an image.
_SUCCESS_END = re.compile(r"^(COMMIT\b|--> [0-9a-f]{6,}|Successfully tagged |Writing manifest to image destination$)")


@dataclass(frozen=True)
class Rule:
    """One known cause. `patterns` recognise it (any one is enough, searched line by line); `unless` patterns veto it;
    `headline` picks the line to show (in order of preference: the first line its first pattern matches, else its
    second...; the first line the patterns match when it is empty); `tools` and `steps`
    limit it to logs of those tools (when the caller says which) and failing steps; `when` names facts about the run
    (its configuration, not its log) that must all hold, and only a caller that knows them passes them."""

    cause: str
    title: str
    explanation: str
    fix: str
    link: str
    patterns: tuple[re.Pattern, ...]
    headline: tuple[re.Pattern, ...] = ()
    unless: tuple[re.Pattern, ...] = ()
    tools: tuple[str, ...] = ()
    steps: tuple[re.Pattern, ...] = ()
    when: frozenset[str] = frozenset()
    severity: str = "error"

    @classmethod
    def from_dict(cls, data: dict) -> Rule:
        def compiled(key):
            value = data.get(key, ())
            return tuple(re.compile(p) for p in ([value] if isinstance(value, str) else value))

        unknown = set(data) - {"cause", "title", "explanation", "fix", "link", "patterns", "headline", "unless",
                               "tools", "steps", "when", "severity"}
        if unknown:
            raise ValueError(f"rule {data.get('cause')!r}: unknown keys {sorted(unknown)}")
        if data.get("severity", "error") not in ("error", "warning"):
            raise ValueError(f"rule {data['cause']!r}: severity is 'error' or 'warning'")
        return cls(cause=data["cause"], title=data["title"], explanation=data["explanation"], fix=data["fix"],
                   link=data.get("link", ""), patterns=compiled("patterns"), headline=compiled("headline"),
                   unless=compiled("unless"), tools=tuple(data.get("tools", ())), steps=compiled("steps"),
                   when=frozenset(data.get("when", ())), severity=data.get("severity", "error"))


@dataclass
class Explanation:
    """What a person wants to read first about a run: did it fail, at which step, the one line that says why, the
    cause in a sentence and what to do."""

    outcome: str = FAILED
    cause: str = ""
    title: str = ""
    headline: str = ""
    explanation: str = ""
    fix: str = ""
    link: str = ""
    step: str = ""
    warnings: list[str] = field(default_factory=list)

    @property
    def known(self):
        return bool(self.cause)

    @property
    def failed(self):
        return self.outcome == FAILED

    def hint(self, limit=HEADLINE_MAX):
        """The cause and the fix as one short text (what the build and disk image pages keep in their hint)."""
        if not self.known:
            return ""
        text = f"{self.explanation} {self.fix}"
        if self.link and len(text) + len(self.link) + 3 <= limit:
            text += f" ({self.link})"
        return text[:limit]


@dataclass(frozen=True)
class Segment:
    """A run of log lines for display: `traceback` segments are shown collapsed."""

    kind: str
    lines: tuple[str, ...]

    @property
    def text(self):
        return "\n".join(self.lines)

    @property
    def summary(self):
        """A traceback's last line (the exception), what the collapsed view shows."""
        return next((line.strip() for line in reversed(self.lines) if line.strip()), "")


_extra_rules: list[Rule] = []
_core_rules: list[Rule] | None = None


def load_rules(path: Path = RULES_FILE) -> list[Rule]:
    return [Rule.from_dict(entry) for entry in tomllib.loads(path.read_text())["rule"]]


def register_rules(entries: list[dict]) -> None:
    """A feature's own rules (same keys as failure_rules.toml), tried before the core's; called once at start-up."""
    _extra_rules.extend(Rule.from_dict(entry) for entry in entries)


def rules() -> list[Rule]:
    global _core_rules
    if _core_rules is None:
        _core_rules = load_rules()
    return [*_extra_rules, *_core_rules]


def warning_rule_for(line: str) -> Rule | None:
    """The warning rule (a finding that does not fail the run, e.g. bootc container lint) one log line is, if any:
    for runs that note warnings as their output streams."""
    cleaned = clean(line)
    return next((rule for rule in rules() if rule.severity == "warning"
                 and any(p.search(cleaned) for p in rule.headline or rule.patterns)), None)


def clean(line: str) -> str:
    """A line as the rules see it: ANSI colour codes (real or pasted as text) and a trailing \\r removed."""
    return _ANSI.sub("", line).rstrip("\r")


def _noise(lines: list[str]) -> list[bool]:
    """Per line: True for echoed commands and the inside of tracebacks and goroutine dumps (never a headline)."""
    noise = [False] * len(lines)
    i = 0
    while i < len(lines):
        line = lines[i]
        if _ECHOED.match(line):
            noise[i] = True
        elif _TRACEBACK_START.search(line):
            noise[i] = True
            j = i + 1
            while j < len(lines) and _TRACEBACK_FRAME.match(lines[j]):
                noise[j] = True
                j += 1
            i = j
            continue
        elif _GOROUTINE.match(line):
            noise[i] = True
            j = i + 1
            while j < len(lines) and _GO_FRAME.match(lines[j]):
                noise[j] = True
                j += 1
            i = j
            continue
        i += 1
    return noise


def segments(text: str) -> list[Segment]:
    """The log split into plain text and tracebacks (Python tracebacks and Go goroutine dumps), for collapsed display."""
    lines = text.splitlines()
    out: list[Segment] = []
    plain: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        start, frame = ((_TRACEBACK_FRAME, True) if _TRACEBACK_START.search(line) else
                        (_GO_FRAME, True) if _GOROUTINE.match(line) else (None, False))
        if not frame:
            plain.append(line)
            i += 1
            continue
        j = i + 1
        while j < len(lines) and start.match(lines[j]):
            j += 1
        if start is _TRACEBACK_FRAME and j < len(lines) and re.match(r"^[\w.]+(Error|Exception|Exit)\b", lines[j]):
            j += 1  # the exception line closes a Python traceback
        if plain:
            out.append(Segment("text", tuple(plain)))
            plain = []
        out.append(Segment("traceback", tuple(lines[i:j])))
        i = j
    if plain:
        out.append(Segment("text", tuple(plain)))
    return out


def failing_step(lines: list[str]) -> tuple[str, int]:
    """The last step the log started (podman/buildah's `STEP n/m:` or the old `STEP n:`, an osbuild stage) and the
    index of its line (-1 when none)."""
    for i in range(len(lines) - 1, -1, -1):
        step = _PODMAN_STEP.match(lines[i])
        if step:
            number, total, what = step.groups()
            return (f"STEP {number}/{total}: {what}" if total else f"STEP {number}: {what}")[:HEADLINE_MAX], i
        stage = _OSBUILD_STAGE.match(lines[i])
        if stage:
            return stage.group(1), i
    return "", -1


def _matching_line(patterns, lines, noise, *, anywhere=False):
    """The first line any of `patterns` matches."""
    for i, line in enumerate(lines):
        if (anywhere or not noise[i]) and any(p.search(line) for p in patterns):
            return i
    return None


def _preferred_line(patterns, lines, noise):
    """The first line the first pattern matches, else the first the second matches, and so on."""
    for pattern in patterns:
        at = _matching_line((pattern,), lines, noise)
        if at is not None:
            return at
    return None


def _applies(rule: Rule, tool: str, step: str, facts: frozenset[str]) -> bool:
    if tool and rule.tools and tool not in rule.tools:
        return False
    if not rule.when <= facts:
        return False
    return not rule.steps or any(p.search(step) for p in rule.steps)


def _last_error_line(lines, noise, start):
    candidates = [i for i in range(max(start, 0), len(lines)) if not noise[i] and lines[i].strip()]
    for i in reversed(candidates):
        if _ERROR_LEVEL.search(lines[i]) and not _NOT_ERROR.search(lines[i]):
            return i
    return candidates[-1] if candidates else None


def _last_copy(lines, noise, at):
    """The last line that repeats line `at`'s message: a tool that prints its error twice (cobra's `Error: ...`, then
    the tool's own timestamped `error: ...` as it exits) is read by its final word."""
    said = _MESSAGE.match(lines[at])
    if not said:
        return at
    message = said.group(1).strip()
    for i in range(len(lines) - 1, at, -1):
        if not noise[i] and lines[i].rstrip().endswith(message) and _MESSAGE.match(lines[i]):
            return i
    return at


def explain(text: str, *, tool: str = "", succeeded: bool | None = None, facts: Iterable[str] = ()) -> Explanation:
    """The explanation of one run's log. `tool` (podman, buildah, bootc-image-builder, image-builder, bootc,
    bootc-lint, anaconda) limits the rules to that tool's; `succeeded` is the run's exit (None: not known, as for a
    pasted log, when a log that ends in a commit counts as a success); `facts` are what the caller knows of the run
    beyond its log (e.g. "config-disk-minsize-missing" from a conversion's own config), for the rules that need them."""
    facts = frozenset(facts)
    raw = text.splitlines()
    lines = [clean(line) for line in raw]
    noise = _noise(lines)
    step, step_at = failing_step(lines)
    if succeeded is None and _SUCCESS_END.match(next((line for line in reversed(lines) if line.strip()), "").strip()):
        succeeded = True

    result = Explanation(step=step)
    # Errors first; warnings only explain a run that did not fail (or whose exit is not known and no error is).
    passes = ([] if succeeded else ["error"]) + ([] if succeeded is False else ["warning"])
    for severity in passes:
        for rule in rules():
            if rule.severity != severity or not _applies(rule, tool, step, facts):
                continue
            at = _matching_line(rule.patterns, lines, noise, anywhere=True)
            if at is None or _matching_line(rule.unless, lines, noise, anywhere=True) is not None:
                continue
            headline_at = (_preferred_line(rule.headline, lines, noise) if rule.headline else
                           _matching_line(rule.patterns, lines, noise))
            if headline_at is None:
                headline_at = at if not noise[at] else _last_error_line(lines, noise, step_at)
            if headline_at is not None:
                headline_at = _last_copy(lines, noise, headline_at)
            result.cause, result.title = rule.cause, rule.title
            result.explanation, result.fix, result.link = rule.explanation, rule.fix, rule.link
            result.headline = raw[headline_at].rstrip() if headline_at is not None else ""
            if severity == "warning":
                result.outcome = WARNINGS
                result.warnings = [raw[i].rstrip()[:HEADLINE_MAX] for i, line in enumerate(lines)
                                   if not noise[i] and any(p.search(line) for p in rule.headline or rule.patterns)]
            return result

    if succeeded:
        result.outcome = SUCCEEDED
        return result
    at = _last_error_line(lines, noise, step_at + 1 if step_at >= 0 else 0)
    if at is None and step_at >= 0:
        at = _last_error_line(lines, noise, 0)
    result.headline = raw[at].rstrip() if at is not None else ""
    return result
