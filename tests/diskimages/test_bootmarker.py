"""A boot marker (a team's regular expression, matched against the VM's serial console) can never hold a boot-test
worker: its searches share a time bound, and one that uses it up ends the boot with a verdict that says why, the VM
killed; and a plan refuses the shapes of pattern that take exponential time, saying how to write them."""

import sys

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from builds.diskimages import bootmarker, bootplans, qemu
from builds.diskimages.models import BootTestPlan
from tests.diskimages.bootimages import ConsoleLog
from tests.diskimages.rows import succeeded_build

CATASTROPHIC = r"(a|aa)+$"  # against a long run of a's that ends in b, it tries every way of splitting the a's
ALMOST = "a" * 60 + "b"


def vm_printing(*lines):
    """A stand-in for QEMU: prints the console lines, then runs until it is killed (as a booted VM would)."""
    script = f"import sys, time\nfor line in {list(lines)!r}:\n    print(line, flush=True)\ntime.sleep(300)\n"
    return [sys.executable, "-c", script]


@pytest.mark.parametrize("pattern", [
    r"login: ?$|boot-complete\.target|Reached target.*Boot Complete",  # the portal's own
    r"ready: \d+ services", r"(\d{2}:){2}\d{2} up", r"(?:ab)+c", r"(eth|wlan)\d+ up", r"(a+)?b", r"\p{Lu}+ READY",
    r"[\p{L}\d]+ up",
])
def test_ordinary_markers_are_taken(pattern):
    assert bootmarker.marker_problem(pattern) == ""


@pytest.mark.parametrize("pattern", [
    r"(a+)+$", r"(\w+\s?)+$", r"(a*)*b", r"(.*,)+x", r"((a+)?)+", r"([a-z]+\d*)+!",  # a repetition repeated
    r"(a|aa)+$", r"(ab|a)*c", r"(a|a?)+$", r"(?:x|(x))+y",  # alternatives that start alike, repeated
    r"(\p{L}+\s?)+$", r"(\pL|\pL\pL)+$",  # the same shapes around Unicode properties, which only `regex` reads
])
def test_markers_that_can_take_exponential_time_are_refused_saying_how_to_write_them(pattern):
    problem = bootmarker.marker_problem(pattern)
    assert problem.startswith("This pattern repeats a repetition or overlapping alternatives")
    assert "login: ?$" in problem


def test_a_marker_that_is_not_a_regular_expression_says_so():
    assert bootmarker.marker_problem("login: (").startswith("This is not a regular expression: ")


def test_a_slow_marker_uses_up_its_time_and_then_every_search_refuses():
    marker = bootmarker.Marker(CATASTROPHIC, seconds=0.2)
    assert marker.search("aaab") is False and marker.search("login: aa") is True
    with pytest.raises(bootmarker.MarkerTooSlow, match=r"took more than 0\.2 s matching the console's lines"):
        marker.search(ALMOST)
    with pytest.raises(bootmarker.MarkerTooSlow):
        marker.search("aa")


def test_a_boot_whose_marker_takes_too_long_fails_with_the_reason_and_the_vm_is_killed():
    console = ConsoleLog()
    verdict = qemu.boot(vm_printing("Linux version 6.1.0", ALMOST, "login: "), watch=console,
                        marker=bootmarker.Marker(CATASTROPHIC, seconds=0.2), boot_seconds=120, soak_seconds=0,
                        max_console_bytes=1 << 20)
    assert not verdict.passed
    assert verdict.reason.startswith(f"The boot marker {CATASTROPHIC!r} took more than 0.2 s matching the console's "
                                     "lines, so the boot test stopped")
    assert "BOOT_TEST_MARKER" in verdict.reason and ALMOST in verdict.tail
    assert "boot test: the console reached the marker" not in "\n".join(console.lines)


def test_a_boot_whose_marker_matches_in_time_passes_as_before():
    verdict = qemu.boot(vm_printing("Linux version 6.1.0", "test-os login: "), watch=ConsoleLog(),
                        marker=bootmarker.Marker(r"login: ?$"), boot_seconds=120, soak_seconds=0,
                        max_console_bytes=1 << 20)
    assert verdict.passed and verdict.reason.startswith("Booted to the marker in ")


@pytest.mark.django_db
def test_a_plan_refuses_a_catastrophic_marker_and_keeps_nothing(personas):
    build = succeeded_build(personas.team, personas.developer)
    with pytest.raises(ValidationError, match="repeats a repetition or overlapping alternatives") as refused:
        bootplans.boot_test_plan_save(definition=build.definition, user=personas.developer, marker=r"(\w+\s?)+$")
    assert list(refused.value.message_dict) == ["marker"]
    assert not BootTestPlan.objects.exists()


def test_the_portals_own_marker_is_checked_at_start(settings):
    settings.BOOT_TEST_MARKER = r"(\w+\s?)+$"
    with pytest.raises(SystemCheckError, match=r"diskimages\.E001.*BOOT_TEST_MARKER: This pattern repeats a repetition"):
        call_command("check")
    settings.BOOT_TEST_MARKER = r"login: ?$"
    call_command("check")
