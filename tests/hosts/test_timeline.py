"""Every difference between two snapshots becomes an event (hosts.timeline.diff, no database)."""

from hosts.bootc import BootcStatus, Entry, ImageInfo
from hosts.models import ActionKind, EventKind
from hosts.timeline import diff

A, B, C = ("sha256:" + c * 64 for c in "abc")
REF = "reg.example.com/platform/web-os:prod"


def entry(digest, version="", pinned=False, cached=None):
    return Entry(image=ImageInfo(image=REF, digest=digest, version=version), pinned=pinned, cached_update=cached)


def status(booted=None, staged=None, rollback=None, queued=False, spec=REF, others=()):
    return BootcStatus(kind="BootcHost", spec_image=ImageInfo(image=spec) if spec else None, booted=booted,
                       staged=staged, rollback=rollback, rollback_queued=queued, host_type="bootcHost",
                       other_deployments=tuple(others)).to_dict()


def kinds(events):
    return [e.kind for e in events]


def test_the_first_status_is_one_event():
    events = diff(None, status(entry(A, "1"), staged=entry(B, "2")))
    assert kinds(events) == [EventKind.FIRST_SEEN]
    assert "boots aaaaaaaaaaaa (1)" in events[0].summary and "bbbbbbbbbbbb (2) staged" in events[0].summary


def test_nothing_changed_nothing_recorded():
    same = status(entry(A), rollback=entry(B))
    assert diff(same, same) == []


def test_an_update_staged_with_its_digest_and_version():
    [event] = diff(status(entry(A, "1")), status(entry(A, "1"), staged=entry(B, "2")))
    assert (event.kind, event.digest, event.version, event.previous_digest) == (EventKind.STAGED, B, "2", A)


def test_the_staged_deployment_booted_with_the_previous_one():
    [event] = diff(status(entry(A, "1"), staged=entry(B, "2")), status(entry(B, "2"), rollback=entry(A, "1")))
    assert event.kind == EventKind.BOOTED and (event.digest, event.previous_digest) == (B, A)
    assert "the staged deployment" in event.summary


def test_an_automatic_rollback_after_a_failed_health_check():
    """greenboot: B booted, failed, GRUB fell back to A, `bootc rollback` made it permanent. A poll sees A booted,
    B under rollback, nothing staged."""
    [event] = diff(status(entry(A, "1"), staged=entry(B, "2")), status(entry(A, "1"), rollback=entry(B, "2")),
                   action_kind=ActionKind.REBOOT)
    assert event.kind == EventKind.ROLLED_BACK and event.automatic
    assert (event.digest, event.previous_digest) == (A, B)


def test_the_grub_fallback_seen_before_greenboot_reorders():
    before = status(entry(B, "2"), rollback=entry(A, "1"))
    fallback = status(entry(A, "1"), rollback=entry(B, "2"), queued=True)
    [event] = diff(before, fallback)
    assert event.kind == EventKind.ROLLED_BACK and event.automatic
    made_permanent = status(entry(A, "1"), rollback=entry(B, "2"))
    assert diff(fallback, made_permanent, rolled_back=True) == []


def test_an_operators_rollback_is_queued_then_booted():
    before = status(entry(A), staged=entry(C), rollback=entry(B))
    queued = status(entry(A), rollback=entry(B), queued=True)
    events = diff(before, queued, action_kind=ActionKind.ROLLBACK)
    assert kinds(events) == [EventKind.UNSTAGED, EventKind.ROLLBACK_QUEUED]
    assert not events[1].automatic
    [booted] = diff(queued, status(entry(B), rollback=entry(A)), action_kind=ActionKind.REBOOT,
                    rollback_queued_by_operator=True)
    assert booted.kind == EventKind.ROLLED_BACK and not booted.automatic


def test_a_queued_rollback_undone():
    [event] = diff(status(entry(A), rollback=entry(B), queued=True), status(entry(A), rollback=entry(B)))
    assert event.kind == EventKind.ROLLBACK_CANCELLED


def test_the_image_switched():
    other = "reg.example.com/platform/web-os:dev"
    events = diff(status(entry(A)), status(entry(A), staged=entry(B), spec=other), action_kind=ActionKind.SWITCH)
    assert kinds(events) == [EventKind.SWITCHED, EventKind.STAGED]
    assert events[0].detail == {"from": REF, "to": other}


def test_pinned_and_unpinned():
    pinned = status(entry(A), rollback=entry(B, pinned=True))
    assert kinds(diff(status(entry(A), rollback=entry(B)), pinned)) == [EventKind.PINNED]
    assert kinds(diff(pinned, status(entry(A), rollback=entry(B)))) == [EventKind.UNPINNED]
    gone = status(entry(C), rollback=entry(A))
    assert EventKind.UNPINNED not in kinds(diff(pinned, gone))  # removed, not unpinned


def test_pinned_other_deployments_count():
    before = status(entry(A))
    after = status(entry(A), others=[entry(C, "0.1", pinned=True)])
    [event] = diff(before, after)
    assert event.kind == EventKind.PINNED and event.digest == C


def test_an_update_found_by_a_check():
    update = ImageInfo(image=REF, digest=B, version="2")
    [event] = diff(status(entry(A)), status(entry(A, cached=update)))
    assert (event.kind, event.digest, event.version) == (EventKind.UPDATE_AVAILABLE, B, "2")


def test_a_booted_change_nobody_explains_is_still_recorded():
    [event] = diff(status(entry(A)), status(entry(C)))
    assert event.kind == EventKind.BOOTED and event.previous_digest == A


def test_plain_ostree_to_bootc():
    ostree = Entry(image=None, ostree_checksum="f" * 64)
    [event] = diff(status(ostree, staged=entry(A)), status(entry(A), rollback=ostree))
    assert event.kind == EventKind.BOOTED and event.digest == A
