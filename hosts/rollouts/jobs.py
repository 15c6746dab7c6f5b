"""What a rollout's engine does on a host, in its thread pool: network only (SSH), never the database, each job
returning what it found for the engine's own thread to record. And how to tell a host that has rebooted from one that
has not gone down yet."""

import time

from hosts import bootc
from hosts.connect import HostError, session_for, setting
from hosts.poller import PollOutcome, read_status
from portal import ssh


def job_preflight(host_id, target, commands):
    """df on /sysroot, then `bootc upgrade --check` (the registry reachable from the host): {"free": bytes} or
    {"error": why}."""
    out = {}
    try:
        with session_for(target) as connection:
            for command in commands:
                result = connection.run(command, timeout=setting("HOSTS_COMMAND_TIMEOUT", 30))
                if result.exit_status != 0:
                    error = (result.error_text() or result.text()).strip().splitlines()
                    what = "the free space" if command.argv[0] == "df" else "the target from the host"
                    return {"error": f"cannot read {what}: {error[-1] if error else result.exit_status}"}
                if command.argv[0] == "df":
                    lines = result.text().split()
                    out["free"] = int(lines[-1]) if lines and lines[-1].isdigit() else None
    except (ssh.SSHError, HostError) as exc:
        return {"error": f"unreachable: {exc}"}
    return out


def booted_index(status):
    """The booted deployment's index in ostree's list, as `ostree admin pin` counts: the staged deployment comes first,
    then the one the next boot takes (the rollback, when one is queued), then the other."""
    return (1 if status.staged is not None else 0) + (1 if status.rollback_queued and status.rollback else 0)


def job_pin_booted(host_id, target):
    """Pin the booted deployment (`ostree admin pin N`), so it stays on the host as a fallback through the major
    upgrade and the updates after it, then read the status to see it pinned. {"outcome", "pinned": digest} or
    {"error": why} (with the outcome when the host answered)."""
    before = read_status(target, host_id)
    status, error = _status_of(before)
    if error:
        return {"error": error, "outcome": before}
    if status.booted is None:
        return {"error": "its status shows no booted deployment", "outcome": before}
    booted_digest = status.booted.digest
    if not status.booted.pinned:
        try:
            with session_for(target) as connection:
                result = connection.run(ssh.ostree_admin_pin(booted_index(status)),
                                        timeout=setting("HOSTS_COMMAND_TIMEOUT", 30))
        except (ssh.SSHError, HostError) as exc:
            return {"error": f"unreachable: {exc}"}
        if result.exit_status != 0:
            lines = (result.error_text() or result.text()).strip().splitlines()
            return {"error": lines[-1] if lines else f"exit status {result.exit_status}", "outcome": before}
    after = read_status(target, host_id)
    status, error = _status_of(after)
    if error:
        return {"error": error, "outcome": after}
    booted = status.booted
    if booted is None or not booted.pinned or booted.digest != booted_digest:
        return {"error": "after `ostree admin pin`, its status does not show the booted deployment pinned",
                "outcome": after}
    return {"outcome": after, "pinned": booted.digest}


def _status_of(outcome):
    """(BootcStatus, None) or (None, why it cannot be read)."""
    if outcome.error is not None:
        return None, f"unreachable: {outcome.error}"
    if outcome.exit_status:
        return None, f"bootc status failed: {bootc.error_line(outcome.stderr) or outcome.exit_status}"
    try:
        return bootc.parse_status(outcome.raw.decode("utf-8", errors="replace")), None
    except bootc.StatusUnreadable as exc:
        return None, f"its status is unreadable: {exc}"


def job_read(host_id, target):
    return {"outcome": read_status(target, host_id)}


def fingerprint(raw):
    """What tells one boot's deployments from another's: booted, staged and rollback digests and a queued rollback
    (None for output that is not a status)."""
    try:
        status = bootc.parse_status(raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw)
    except bootc.StatusUnreadable:
        return None
    return tuple(entry.digest if entry is not None else "" for entry in (status.booted, status.staged,
                                                                         status.rollback)) + (status.rollback_queued,)


def rebooted(before, after):
    """Whether `after` (a fingerprint) is of a boot later than `before`'s: another deployment booted, another one
    under rollback (greenboot's fallback keeps the booted one), or a queued rollback consumed. A staged entry
    appearing, or unlocked, is no boot."""
    if after is None:
        return False
    return after[0] != before[0] or after[2] != before[2] or (before[3] and not after[3])


def host_fingerprint(host):
    return (host.booted_digest, host.staged_digest, host.rollback_digest, host.rollback_queued)


def job_command(host_id, target, commands, reboots, before=None):
    """Run `commands`; with `reboots`, the connection may drop: then wait for the host to come back (`before`: its
    deployments before the reboot, to tell the rebooted host from one that has not gone down yet)."""
    timeout = setting("HOSTS_ACTION_COMMAND_TIMEOUT", 1800)
    sent_at = time.monotonic()
    try:
        with session_for(target) as connection:
            for command in commands:
                try:
                    result = connection.run(command, timeout=timeout)
                except ssh.HostUnreachable:
                    if reboots:
                        break  # the host went down under the command: it is rebooting
                    raise
                if result.exit_status != 0:
                    error = result.error_text() or result.text().strip() or f"exit status {result.exit_status}"
                    return {"error": error, "sent": True}
    except (ssh.SSHError, HostError) as exc:
        if not reboots:
            return {"error": f"unreachable: {exc}", "outcome": PollOutcome(host_id, error=exc)}
        return {"error": f"unreachable: {exc}", "sent": False}
    if not reboots:
        return {"outcome": read_status(target, host_id)}
    return job_wait_back(host_id, target, sent_at, sent=True, before=before)


def job_wait_back(host_id, target, sent_at=None, *, sent=False, before=None):
    """Wait for a rebooted host to answer again; its status, the downtime, and greenboot's journal of this boot. An
    answer with the deployments of `before` comes from a host that has not gone down yet: it waits on."""
    sent_at = sent_at if sent_at is not None else time.monotonic()
    deadline = time.monotonic() + setting("ROLLOUTS_REBOOT_WAIT_SECONDS", setting("HOSTS_REBOOT_WAIT_SECONDS", 600))
    interval = setting("HOSTS_REBOOT_POLL_SECONDS", 5)
    time.sleep(min(interval, 1.0))
    outcome = answered = None
    while time.monotonic() < deadline:
        outcome = read_status(target, host_id, timeout=30)
        if outcome.error is None:
            answered = outcome
            if before is None or rebooted(before, fingerprint(outcome.raw)):
                return {"outcome": outcome, "downtime": round(time.monotonic() - sent_at, 2), "sent": sent,
                        "journal": _journal(target)}
        elif isinstance(outcome.error, ssh.HostKeyMismatch):
            break
        time.sleep(interval)
    if answered is not None:  # it answers, but never rebooted: judged on what it runs
        return {"outcome": answered, "sent": sent}
    return {"outcome": outcome or PollOutcome(host_id, error=ssh.HostUnreachable("no answer")), "sent": sent,
            "error": "did not come back"}


def _journal(target):
    try:
        with session_for(target) as connection:
            result = connection.run(ssh.journalctl("greenboot-healthcheck.service", boot=0, lines=20), timeout=10,
                                    max_output=64 * 1024)
        return [line for line in result.text().splitlines() if line and not line.startswith("-- No")]
    except ssh.SSHError:
        return []
