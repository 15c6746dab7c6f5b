"""The boot marker: the regular expression a boot test looks for on the VM's serial console ("booted"), which a team
sets on its definition's boot-test plan (or the portal's BOOT_TEST_MARKER).

A regular expression can take exponential time: `(\\w+\\s?)+$` against a console line of words that ends in a bracket
backtracks through every way of splitting the words, for minutes, and Python's `re` cannot be interrupted. The console
watch runs in the boot-test worker's one thread, so such a search would hold the worker past every deadline the watch
keeps (the boot deadline, cancel, the run's time limit) while the VM runs on. So:

- the marker is matched with the `regex` package, whose searches stop at a timeout; a boot's marker has
  MARKER_SECONDS of matching in all (an ordinary pattern spends microseconds a line, a whole 4 MiB console well under
  a second), and one that uses them up ends the boot test with a verdict that says so;
- a plan's marker is checked when it is saved, and BOOT_TEST_MARKER by a system check: a repetition inside a
  repetition where either is unbounded (`(a+)+`, `(\\w+\\s?)*`, `(.*,)+`), or alternatives that may start alike inside
  an unbounded one (`(a|aa)+`, `(a|a?)*`), the shapes of the patterns that blow up, are refused with a message saying
  how to write it. (The `regex` package defuses some nested repetitions itself, not overlapping alternatives; `re`
  defuses none.)
"""

from __future__ import annotations

import re
import time
from re import _constants as sre_constants
from re import _parser as sre_parser

import regex
from django.conf import settings
from django.core.checks import Error

# Seconds of matching a boot's marker may use in all, across every console line, before the boot test stops.
MARKER_SECONDS = 2.0

# The parser `re` compiles with: it names each repetition, so a nested one can be found. (Private, and stable since
# Python 3.11 moved it; tests/diskimages/test_bootmarker.py shows what it finds.)
REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT}  # a possessive repetition never backtracks: not here


class MarkerTooSlow(Exception):
    """The marker used up its time matching the console: the boot test fails with this message."""


class Marker:
    """A compiled marker whose searches, together, take at most `seconds` (of this thread's CPU)."""

    def __init__(self, pattern: str, *, seconds: float = MARKER_SECONDS):
        self.pattern = pattern
        self.compiled = regex.compile(pattern)  # raises regex.error for a pattern that is not a regular expression
        self.seconds = self.left = seconds

    def search(self, text: str) -> bool:
        """Whether `text` holds a match. Raises MarkerTooSlow once the marker has used up its time."""
        if self.left <= 0:
            raise self._too_slow()
        started = time.thread_time()
        try:
            return self.compiled.search(text, timeout=self.left) is not None
        except TimeoutError:
            self.left = 0
            raise self._too_slow() from None
        finally:
            self.left -= time.thread_time() - started

    def _too_slow(self) -> MarkerTooSlow:
        return MarkerTooSlow(
            f"The boot marker {self.pattern!r} took more than {self.seconds:g} s matching the console's lines, so the "
            "boot test stopped: a pattern that repeats a repetition or overlapping alternatives, such as (a|aa)+ or "
            "(\\w+\\s?)+, can take exponential time. Write it with one repetition on the definition's boot-test plan "
            "(or BOOT_TEST_MARKER).")


def marker_problem(pattern: str) -> str:
    """Why `pattern` cannot be a boot marker ("" if it can): not a regular expression, a repetition inside a
    repetition where either is unbounded, or alternatives that overlap inside an unbounded repetition."""
    try:
        regex.compile(pattern)
    except regex.error as exc:
        return f"This is not a regular expression: {exc}."
    try:
        parsed = sre_parser.parse(_UNICODE_PROPERTY.sub(_as_word_class, pattern))
    except re.error:  # syntax only the regex package reads: its searches' time bound still holds
        return ""
    if _repeats_a_repetition(parsed, outer=None):
        return ("This pattern repeats a repetition or overlapping alternatives (like (\\w+\\s?)+, (a*)* or (a|aa)+), "
                "which can take exponential time on a console line that almost matches and would hold a boot-test "
                "worker. Write it with one repetition, e.g. login: ?$ or Reached target .*Boot Complete.")
    return ""


# A Unicode property (\p{L}, \P{Lu}, \pL), which only the regex package reads, matches one character as \w does: read
# as \w, `re`'s parser sees the shape around it, so (\p{L}|\p{L}\p{L})+ is refused as (\w|\w\w)+ is. An escaped
# backslash is matched first, so \\p{L} (a backslash, then "p{L}") is left as it is.
_UNICODE_PROPERTY = re.compile(r"\\\\|\\[pP](?:\{[^}]*\}|[A-Za-z])")


def _as_word_class(match) -> str:
    return match.group() if match.group() == "\\\\" else "\\w"


def _repeats_a_repetition(items, *, outer) -> bool:
    """Whether a repetition (of more than one) sits inside another where either is unbounded. `outer`: None outside
    any repetition, else whether the enclosing one is unbounded."""
    for op, av in items:
        if op in REPEATS:
            _low, high, body = av
            if high <= 1:  # x? repeats nothing
                inner = outer
            else:
                unbounded = high == sre_constants.MAXREPEAT
                if outer is not None and (unbounded or outer):
                    return True
                inner = unbounded
            if _repeats_a_repetition(body, outer=inner):
                return True
        elif op == sre_constants.BRANCH and outer and _alternatives_overlap(av[1]):
            return True  # (a|aa)+, (ab|a)*, (a|a?)+: the same text splits into the alternatives in many ways
        elif any(_repeats_a_repetition(sub, outer=outer) for sub in _subpatterns(op, av)):
            return True
    return False


def _alternatives_overlap(branches) -> bool:
    """Whether two alternatives may start with the same character, or one may match nothing (said only when plain:
    literal first characters; classes are left to the time bound)."""
    firsts = []
    for branch in branches:
        first = _first_literal(list(branch))
        if first == "":
            return True
        if first is not None:
            firsts.append(first)
    return len(firsts) != len(set(firsts))


def _first_literal(items):
    """The literal character `items` must start with; "" if they may match nothing; None if neither is plain."""
    for index, (op, av) in enumerate(items):
        if op == sre_constants.AT:  # ^, $, \b: no character
            continue
        if op == sre_constants.LITERAL:
            return chr(av)
        if op == sre_constants.SUBPATTERN:
            first = _first_literal(list(av[-1]))
            if first == "":
                continue
            return first
        if op in REPEATS:
            low, _high, body = av
            if low >= 1:
                return _first_literal(list(body))
            return "" if _first_literal(items[index + 1:]) == "" else None  # a? and nothing after: may match nothing
        return None
    return ""


def _subpatterns(op, av):
    """The parsed sub-patterns an item holds: a group's, each alternative, a look-around's, a conditional's branches.
    An atomic group and a possessive repetition never backtrack into themselves, so they hold none that matter."""
    if op == sre_constants.SUBPATTERN:
        return [av[-1]]
    if op == sre_constants.BRANCH:
        return list(av[1])
    if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
        return [av[1]]
    if op == sre_constants.GROUPREF_EXISTS:
        return [branch for branch in av[1:] if branch is not None]
    return []


def check_marker_setting(app_configs=None, **kwargs):
    """A system check: the portal's own marker (BOOT_TEST_MARKER, from the environment) passes what a plan's must, so a
    bad one stops `manage.py check` and migrate rather than every boot test that takes it."""
    problem = marker_problem(settings.BOOT_TEST_MARKER)
    return [Error(f"BOOT_TEST_MARKER: {problem}", id="diskimages.E001")] if problem else []
