"""What a rollout policy means, pure: whether it can ever finish (checked when it is saved, with the reason), how it
cuts a stage's hosts into batches, whether a batch's failures halt the rollout, and which budget group a host is in.
No database writes here; `services` saves, `engine` executes."""

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .models import window_open

# A window is checked over four weeks at this step: a weekly window that opens at all opens in that span.
_WEEK_MINUTES = 7 * 24 * 60


class PolicyRefused(ValueError):
    """A policy that can never finish; the message says why, for the person who saved it."""


def has_label(labels, label):
    return label in (labels or "").split()


def group_of(labels, budget_label):
    """The host's budget group: the value of its `budget_label=` label ("" when it has none, or no budget label)."""
    if not budget_label:
        return ""
    prefix = f"{budget_label}="
    for word in (labels or "").split():
        if word.startswith(prefix):
            return word[len(prefix):]
    return ""


def check(policy, *, host_labels=None):
    """Raise PolicyRefused when `policy` (RolloutPolicy.as_data()) could never finish. `host_labels`: the labels of
    the hosts that follow the stage now, when known (a canary selector must match some)."""
    p = policy
    canary_ways = [name for name in ("canary_selector", "canary_count", "canary_percent") if p.get(name)]
    if len(canary_ways) > 1:
        raise PolicyRefused("Choose the canary one way: a label, a number of hosts or a share of them.")
    if p.get("batch_count") and p.get("batch_percent"):
        raise PolicyRefused("Give the batch size as a number of hosts or as a share of them, not both.")
    for name in ("canary_percent", "batch_percent"):
        value = p.get(name)
        if value is not None and value != "" and not 0 < int(value) <= 100:
            raise PolicyRefused(f"{name.replace('_', ' ').capitalize()} must be from 1 to 100.")
    if p.get("max_failed_percent") is not None and int(p["max_failed_percent"]) > 100:
        raise PolicyRefused("The failure threshold is a share of a batch: at most 100 %.")
    for name, what in (("max_updating_per_group", "rebooting"), ("max_downloading_per_group", "downloading")):
        if p.get(name) == 0:
            raise PolicyRefused(f"A budget of 0 hosts {what} at once lets no host through: the rollout could never "
                                "finish. Leave it empty for no limit.")
    if p.get("max_failed_total") == 0:
        raise PolicyRefused("Halting after 0 failed hosts would halt before any host starts; leave it empty for no "
                            "total limit.")
    windows = p.get("windows") or []
    for window in windows:
        if not window.get("weekdays"):
            raise PolicyRefused(f"The window {window['starts']}-{window['ends']} has no day of the week: it never "
                                "opens, so no host could ever reboot.")
        if window["starts"] == window["ends"]:
            raise PolicyRefused(f"The window {window['starts']}-{window['ends']} starts when it ends: it never opens, "
                                "so no host could ever reboot.")
    if windows and not _opens_ever(windows, p.get("window_timezone") or "UTC"):
        raise PolicyRefused("None of the maintenance windows ever opens, so no host could ever reboot.")
    selector = p.get("canary_selector")
    if selector and host_labels is not None and not any(has_label(labels, selector) for labels in host_labels):
        raise PolicyRefused(f"The canary label {selector!r} matches none of the {len(host_labels)} hosts that follow "
                            "this stage: the canary batch would be empty.")


def _opens_ever(windows, tz_name):
    start = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday
    return any(window_open(windows, tz_name, start + timedelta(minutes=m)) for m in range(0, 4 * _WEEK_MINUTES, 15))


@dataclass(frozen=True)
class Planned:
    host_id: int
    name: str
    labels: str


def plan_batches(hosts, policy):
    """Cut `hosts` (Planned, any order) into batches: the canary first (batch 0, when the policy names one), then
    batches of the policy's size, by name. Returns [[Planned, ...], ...], every host exactly once."""
    hosts = sorted(hosts, key=lambda h: (h.name, h.host_id))
    total = len(hosts)
    if not total:
        return []
    canary = []
    if policy.get("canary_selector"):
        canary = [h for h in hosts if has_label(h.labels, policy["canary_selector"])]
    elif policy.get("canary_count"):
        canary = hosts[:int(policy["canary_count"])]
    elif policy.get("canary_percent"):
        canary = hosts[:max(1, math.ceil(total * int(policy["canary_percent"]) / 100))]
    chosen = {h.host_id for h in canary}
    rest = [h for h in hosts if h.host_id not in chosen]
    if policy.get("batch_count"):
        size = int(policy["batch_count"])
    elif policy.get("batch_percent"):
        size = max(1, math.ceil(total * int(policy["batch_percent"]) / 100))
    else:
        size = max(1, len(rest))
    batches = [canary] if canary else []
    batches += [rest[i:i + size] for i in range(0, len(rest), size)]
    return batches


def halts(policy, *, batch_size, batch_failed, total_failed):
    """Why the rollout halts after these failures ("" when it goes on): more than max_failed_percent of the batch,
    or max_failed_total hosts in all."""
    limit_total = policy.get("max_failed_total")
    if limit_total and total_failed >= int(limit_total):
        return f"{total_failed} host{'s' if total_failed != 1 else ''} failed in all (the policy halts at {limit_total})"
    percent = int(policy.get("max_failed_percent") or 0)
    if batch_size and batch_failed * 100 > percent * batch_size:
        return (f"{batch_failed} of {batch_size} host{'s' if batch_size != 1 else ''} of the batch failed "
                f"({round(batch_failed * 100 / batch_size)} %; the policy allows {percent} %)")
    return ""
