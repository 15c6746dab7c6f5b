"""What a rollout policy means, without hosts: batches, the failure threshold, windows with a time zone, the one-line
summary, and the windows people write."""

from datetime import UTC, datetime

import pytest

from hosts.rollouts.engine import capabilities, summary
from hosts.rollouts.forms import parse_windows
from hosts.rollouts.models import Step, window_open
from hosts.rollouts.policy import Planned, PolicyRefused, check, group_of, halts, plan_batches


def hosts(n, labels=None):
    return [Planned(i, f"web-{i:02d}", (labels or {}).get(i, "")) for i in range(1, n + 1)]


class TestBatches:
    def test_a_canary_by_count_then_batches_by_count(self):
        batches = plan_batches(hosts(10), {"canary_count": 1, "batch_count": 4})
        assert [[h.host_id for h in b] for b in batches] == [[1], [2, 3, 4, 5], [6, 7, 8, 9], [10]]

    def test_a_canary_by_label_then_batches_by_percent(self):
        batches = plan_batches(hosts(10, {7: "canary site=a", 9: "canary"}), {"canary_selector": "canary",
                                                                             "batch_percent": 50})
        assert [len(b) for b in batches] == [2, 5, 3] and {h.host_id for h in batches[0]} == {7, 9}

    def test_a_canary_by_percent_rounds_up_and_no_batch_size_means_the_rest_at_once(self):
        batches = plan_batches(hosts(10), {"canary_percent": 5})
        assert [len(b) for b in batches] == [1, 9]

    def test_every_host_is_in_exactly_one_batch(self):
        batches = plan_batches(hosts(37), {"canary_count": 3, "batch_percent": 10})
        ids = [h.host_id for b in batches for h in b]
        assert sorted(ids) == list(range(1, 38))


class TestTheFailureThreshold:
    def test_more_than_the_percentage_of_a_batch_halts(self):
        policy = {"max_failed_percent": 20}
        assert halts(policy, batch_size=10, batch_failed=2, total_failed=2) == ""
        assert "3 of 10 hosts of the batch failed (30 %; the policy allows 20 %)" in halts(
            policy, batch_size=10, batch_failed=3, total_failed=3)

    def test_n_hosts_in_all_halts(self):
        assert halts({"max_failed_percent": 100, "max_failed_total": 3}, batch_size=10, batch_failed=1,
                     total_failed=3).startswith("3 hosts failed in all")

    def test_no_tolerance_halts_on_the_first_failure(self):
        assert halts({"max_failed_percent": 0}, batch_size=50, batch_failed=1, total_failed=1)


class TestWindows:
    WINDOW = [{"weekdays": [0], "starts": "22:00", "ends": "02:00"}]  # Monday night, past midnight

    @pytest.mark.parametrize("when, inside", [
        (datetime(2026, 12, 7, 20, 59, tzinfo=UTC), False),  # Monday 21:59 in Paris
        (datetime(2026, 12, 7, 21, 0, tzinfo=UTC), True),  # Monday 22:00 in Paris
        (datetime(2026, 12, 8, 0, 30, tzinfo=UTC), True),  # Tuesday 01:30 in Paris: the same window
        (datetime(2026, 12, 8, 1, 0, tzinfo=UTC), False),  # Tuesday 02:00 in Paris: closed
    ])
    def test_a_window_past_midnight_in_its_time_zone(self, when, inside):
        assert window_open(self.WINDOW, "Europe/Paris", when) is inside

    def test_no_windows_means_any_time(self):
        assert window_open([], "UTC", datetime(2026, 12, 7, tzinfo=UTC))

    def test_windows_are_written_as_people_say_them(self):
        assert parse_windows("Mon-Fri 22:00-04:00\nsat,sun 1:00-5:30") == [
            {"weekdays": [0, 1, 2, 3, 4], "starts": "22:00", "ends": "04:00"},
            {"weekdays": [5, 6], "starts": "01:00", "ends": "05:30"}]
        assert parse_windows("Fri-Mon 01:00-02:00")[0]["weekdays"] == [0, 4, 5, 6]
        with pytest.raises(ValueError, match="Line 1"):
            parse_windows("whenever")
        with pytest.raises(ValueError, match="not a time of day"):
            parse_windows("Mon 25:00-26:00")


class TestPoliciesThatCanNeverFinish:
    def test_a_window_that_never_opens_in_any_week(self):
        with pytest.raises(PolicyRefused, match="no day of the week"):
            check({"windows": [{"weekdays": [], "starts": "01:00", "ends": "02:00"}]})

    def test_a_canary_label_that_matches_no_host(self):
        with pytest.raises(PolicyRefused, match="matches none of the 2 hosts"):
            check({"canary_selector": "canary"}, host_labels=["web", "db site=a"])
        check({"canary_selector": "canary"}, host_labels=["web canary"])

    def test_a_budget_of_zero(self):
        with pytest.raises(PolicyRefused, match="lets no host through"):
            check({"max_downloading_per_group": 0})


def test_the_budget_group_is_the_value_of_the_budget_label():
    assert group_of("web site=paris rack=2", "site") == "paris"
    assert group_of("web", "site") == "" and group_of("site=a", "") == ""


def test_the_one_line_summary():
    steps = [Step.UPDATED] * 7 + [Step.DOWNLOADING, Step.STAGED, Step.ROLLED_BACK]
    assert summary(steps) == "7/10 updated · 2 staging · 1 rolled back"


def test_what_a_host_can_do_is_read_from_the_fields_its_status_has():
    new = '{"status": {"booted": {"downloadOnly": false, "softRebootCapable": true, "image": {"architecture": "amd64"}}}}'
    old = '{"status": {"booted": {"image": {"imageDigest": "sha256:00"}}}}'
    assert capabilities(new) == {"rollback_apply": True, "soft": True, "download": True}
    assert capabilities(old) == {"rollback_apply": False, "soft": False, "download": False}
    assert capabilities("not json") == {"rollback_apply": False, "soft": False, "download": False}


def test_a_later_boot_is_told_from_a_host_that_has_not_gone_down_yet():
    from hosts.rollouts.jobs import rebooted

    old, new, prev = "sha256:o", "sha256:n", "sha256:p"
    staged_locked = (old, new, prev, False)
    assert not rebooted(staged_locked, (old, new, prev, False))  # unlocked by --from-downloaded, not rebooted yet
    assert rebooted(staged_locked, (new, "", old, False))  # booted the update
    assert rebooted(staged_locked, (old, "", new, False))  # greenboot fell back: the failed one under rollback
    assert not rebooted((old, "", prev, False), (old, new, prev, False))  # old bootc: staged by upgrade --apply
    assert not rebooted((new, "", old, False), (new, "", old, True))  # rollback queued, not yet booted
    assert rebooted((new, "", old, True), (old, "", new, False))
    assert not rebooted(staged_locked, None)
