"""The corpus of real failure logs in tests/data/failures/ is complete and consistent with its manifest.

Every log is text copied from a public bug report; index.toml says where it came from, which cause a person
reading it would name, and which line they would want as the headline. A third of the logs is held out from rule
tuning by a seeded draw recorded in the manifest (see tests/data/failures/README.md).
"""

import random
import re
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[1] / "data" / "failures"
MANIFEST = tomllib.loads((CORPUS / "index.toml").read_text())
LOGS = MANIFEST["log"]
CAUSES = {cause["slug"]: cause for cause in MANIFEST["cause"]}

TOOLS = {"podman", "buildah", "bootc-image-builder", "image-builder", "bootc", "anaconda", "bootc-lint"}
EXITS = {"failed", "succeeded-with-warnings"}
SPLITS = {"held-out", "tune"}
TRAITS = {"old-step-format", "traceback", "echoed-command", "mixed-streams"}
FIELDS = {"id", "tool", "step", "cause", "split", "exit", "source", "headline", "traits", "notes"}
THREAD_URL = re.compile(r"^https://github\.com/[\w.-]+/[\w.-]+/(issues|pull)/\d+$")


def log_text(entry):
    return (CORPUS / f"{entry['id']}.log").read_text(encoding="utf-8")


def held_out_draw(entries, seed):
    """The draw recorded in index.toml: per cause, a third of the sorted ids sampled with a per-cause seed."""
    by_cause = defaultdict(list)
    for entry in entries:
        by_cause[entry["cause"]].append(entry["id"])
    held = set()
    for cause in sorted(by_cause):
        ids = sorted(by_cause[cause])
        k = max(1, round(len(ids) / 3)) if len(ids) >= 2 else 0
        held |= set(random.Random(f"{seed}:{cause}").sample(ids, k))
    return held


def test_every_entry_has_its_log_file_and_every_log_file_an_entry():
    ids = [entry["id"] for entry in LOGS]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    files = {path.stem for path in CORPUS.glob("*.log")}
    assert set(ids) == files


def test_the_corpus_holds_at_least_sixty_logs():
    assert len(LOGS) >= 60


@pytest.mark.parametrize("entry", LOGS, ids=lambda entry: entry["id"])
def test_every_entry_is_complete(entry):
    assert FIELDS <= set(entry), FIELDS - set(entry)
    assert entry["tool"] in TOOLS
    assert entry["exit"] in EXITS
    assert entry["split"] in SPLITS
    assert set(entry["traits"]) <= TRAITS
    assert entry["step"].strip() and entry["notes"].strip()
    assert THREAD_URL.match(entry["source"]), entry["source"]
    context = entry.get("context", [])
    assert isinstance(context, list) and all(isinstance(fact, str) and fact for fact in context)


@pytest.mark.parametrize("entry", LOGS, ids=lambda entry: entry["id"])
def test_every_entry_names_a_described_cause(entry):
    assert entry["cause"] in CAUSES
    assert CAUSES[entry["cause"]]["description"].strip()


@pytest.mark.parametrize("entry", LOGS, ids=lambda entry: entry["id"])
def test_the_headline_is_a_line_of_its_log(entry):
    lines = [line.rstrip() for line in log_text(entry).splitlines()]
    assert entry["headline"].rstrip() in lines


def test_every_cause_slug_is_described_once_and_used():
    slugs = [cause["slug"] for cause in MANIFEST["cause"]]
    assert len(slugs) == len(set(slugs))
    assert set(slugs) == {entry["cause"] for entry in LOGS}


def test_every_cause_has_at_least_two_logs_unless_the_manifest_says_why_not():
    counts = Counter(entry["cause"] for entry in LOGS)
    short = {slug: n for slug, n in counts.items() if n < 2}
    unexplained = {slug for slug in short if not CAUSES[slug].get("short_of_logs", "").strip()}
    assert not unexplained, unexplained
    stale = {slug for slug, cause in CAUSES.items() if "short_of_logs" in cause and counts[slug] >= 2}
    assert not stale, f"{stale} now have two logs: drop short_of_logs"


def test_successes_with_warnings_are_lint_findings_and_there_are_some():
    successes = [entry for entry in LOGS if entry["exit"] == "succeeded-with-warnings"]
    assert len(successes) >= 2
    assert {entry["cause"] for entry in successes} == {"lint-nonfatal"}
    assert all(entry["exit"] == "succeeded-with-warnings" for entry in LOGS if entry["cause"] == "lint-nonfatal")


@pytest.mark.parametrize("trait", sorted(TRAITS))
def test_each_distracting_trait_is_present_in_several_logs(trait):
    assert sum(trait in entry["traits"] for entry in LOGS) >= 2


def test_about_a_third_is_held_out():
    held = sum(entry["split"] == "held-out" for entry in LOGS)
    assert 0.28 <= held / len(LOGS) <= 0.38, held


def test_the_held_out_third_is_the_recorded_seeded_draw():
    drawn = [entry for entry in LOGS if not entry.get("added_after_split")]
    assert len(drawn) == MANIFEST["split"]["drawn_from"]
    held = {entry["id"] for entry in drawn if entry["split"] == "held-out"}
    assert len(held) == MANIFEST["split"]["held_out"]
    assert held == held_out_draw(drawn, MANIFEST["split"]["seed"])


def test_every_cause_with_two_logs_is_represented_on_both_sides_of_the_split():
    sides = defaultdict(set)
    for entry in LOGS:
        sides[entry["cause"]].add(entry["split"])
    one_sided = {cause for cause, seen in sides.items() if len(seen) < 2 and "short_of_logs" not in CAUSES[cause]}
    assert not one_sided, one_sided
