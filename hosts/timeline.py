"""Turning two snapshots of a host into timeline events: a pure function, no database.

`diff(previous, current, ...)` takes two parsed statuses (`BootcStatus.to_dict()` form, or None for the first) and returns
`EventSpec`s. Rollbacks are told apart by how they look (bootc-reference.md section 6):
- an operator's rollback is queued first (`rollbackQueued`), or done by a rollback action, then booted;
- after a failed health check greenboot falls back in GRUB and runs `bootc rollback`: the host still boots the old
  deployment, the staged one is gone and sits under `rollback`. Nobody asked for it, so it is `automatic`.
"""

from dataclasses import dataclass, field

from portal.formatting import short_digest

from .models import ActionKind, EventKind

# Which events each action can explain: a poll after the action attributes these to it (and its user).
ACTION_EXPLAINS = {
    ActionKind.UPGRADE_CHECK: {EventKind.UPDATE_AVAILABLE},
    ActionKind.UPGRADE_STAGE: {EventKind.STAGED, EventKind.UNSTAGED},
    ActionKind.UPGRADE_APPLY: {EventKind.STAGED, EventKind.BOOTED, EventKind.ROLLED_BACK},
    ActionKind.SWITCH: {EventKind.SWITCHED, EventKind.STAGED, EventKind.UNSTAGED},
    ActionKind.SWITCH_APPLY: {EventKind.SWITCHED, EventKind.STAGED, EventKind.BOOTED, EventKind.ROLLED_BACK},
    ActionKind.ROLLBACK: {EventKind.ROLLBACK_QUEUED, EventKind.ROLLBACK_CANCELLED, EventKind.UNSTAGED},
    ActionKind.ROLLBACK_APPLY: {EventKind.ROLLBACK_QUEUED, EventKind.ROLLED_BACK, EventKind.UNSTAGED},
    ActionKind.REBOOT: {EventKind.BOOTED, EventKind.ROLLED_BACK},
}
ROLLBACK_ACTIONS = (ActionKind.ROLLBACK, ActionKind.ROLLBACK_APPLY)


@dataclass
class EventSpec:
    kind: str
    summary: str
    digest: str = ""
    version: str = ""
    previous_digest: str = ""
    previous_version: str = ""
    automatic: bool = False
    detail: dict = field(default_factory=dict)


def describe(digest, version):
    return short_digest(digest, missing="?") + (f" ({version})" if version else "")


def _slot(status, name):
    entry = (status or {}).get(name) or {}
    image = entry.get("image") or {}
    if not entry:
        return None
    return {
        "digest": image.get("digest") or "",
        "version": image.get("version") or "",
        "image": image.get("image") or "",
        "pinned": bool(entry.get("pinned")),
        "download_only": bool(entry.get("download_only")),
        "checksum": entry.get("ostree_checksum") or "",
    }


def _identity(slot):
    """What identifies a deployment: its digest, or its ostree commit when bootc did not deploy an image."""
    if not slot:
        return ""
    return slot["digest"] or (f"ostree:{slot['checksum']}" if slot["checksum"] else "")


def _spec(status):
    return ((status or {}).get("spec_image") or {}).get("image") or ""


def _cached(status):
    booted = (status or {}).get("booted") or {}
    update = booted.get("cached_update") or {}
    return update.get("digest") or "", update.get("version") or ""


def _pinned(status):
    pinned = {}
    for name in ("booted", "staged", "rollback"):
        slot = _slot(status, name)
        if slot and slot["pinned"] and slot["digest"]:
            pinned[slot["digest"]] = slot["version"]
    for entry in (status or {}).get("other_deployments") or ():
        image = (entry or {}).get("image") or {}
        if entry.get("pinned") and image.get("digest"):
            pinned[image["digest"]] = image.get("version") or ""
    return pinned


def _deployed(status):
    digests = set()
    for name in ("booted", "staged", "rollback"):
        slot = _slot(status, name)
        if slot and slot["digest"]:
            digests.add(slot["digest"])
    for entry in (status or {}).get("other_deployments") or ():
        digest = ((entry or {}).get("image") or {}).get("digest")
        if digest:
            digests.add(digest)
    return digests


def diff(previous, current, *, action_kind=None, rollback_queued_by_operator=False, rolled_back=False):
    """The events between two parsed statuses, oldest cause first."""
    events = []
    booted = _slot(current, "booted")
    staged = _slot(current, "staged")
    rollback = _slot(current, "rollback")
    queued = bool((current or {}).get("rollback_queued"))

    if previous is None:
        if booted:
            text = f"First status: boots {describe(booted['digest'], booted['version'])}" if booted["digest"] else \
                "First status: boots a plain ostree deployment (not a container image)"
        else:
            text = "First status: the host did not boot a bootc deployment"
        if staged and staged["digest"]:
            text += f"; update {describe(staged['digest'], staged['version'])} staged"
        if rollback and rollback["digest"]:
            text += f"; rollback {describe(rollback['digest'], rollback['version'])}"
        return [EventSpec(EventKind.FIRST_SEEN, text, digest=booted["digest"] if booted else "",
                          version=booted["version"] if booted else "")]

    p_booted = _slot(previous, "booted")
    p_staged = _slot(previous, "staged")
    p_rollback = _slot(previous, "rollback")
    p_queued = bool(previous.get("rollback_queued"))
    operator_rollback = action_kind in ROLLBACK_ACTIONS

    # The image the host tracks.
    old_spec, new_spec = _spec(previous), _spec(current)
    if old_spec != new_spec and new_spec:
        events.append(EventSpec(EventKind.SWITCHED, f"Switched from {old_spec or 'no image'} to {new_spec}",
                                detail={"from": old_spec, "to": new_spec}))

    booted_id, p_booted_id = _identity(booted), _identity(p_booted)
    staged_id, p_staged_id = _identity(staged), _identity(p_staged)
    rollback_id, p_rollback_id = _identity(rollback), _identity(p_rollback)
    explained_staged = False
    rollback_seen = False

    if booted_id and booted_id != p_booted_id:
        previous_digest = p_booted["digest"] if p_booted else ""
        previous_version = p_booted["version"] if p_booted else ""
        if p_rollback_id and booted_id == p_rollback_id and booted_id != p_staged_id:
            rollback_seen = True
            by_operator = operator_rollback or (p_queued and rollback_queued_by_operator)
            if by_operator:
                text = (f"Rolled back: boots the previous deployment {describe(booted['digest'], booted['version'])} "
                        f"instead of {describe(previous_digest, previous_version)}")
            else:
                text = (f"Automatic rollback: {describe(previous_digest, previous_version)} failed to boot healthy; "
                        f"the host fell back to {describe(booted['digest'], booted['version'])}")
            events.append(EventSpec(EventKind.ROLLED_BACK, text, booted["digest"], booted["version"], previous_digest,
                                    previous_version, automatic=not by_operator))
            if p_staged_id and not staged_id:
                explained_staged = True  # a rollback discards the staged entry
        else:
            how = "the staged deployment " if booted_id == p_staged_id else ""
            if booted["digest"]:
                text = f"Booted {how}{describe(booted['digest'], booted['version'])}"
            else:
                text = "Booted a plain ostree deployment"
            if previous_digest:
                text += f", previously {describe(previous_digest, previous_version)}"
            events.append(EventSpec(EventKind.BOOTED, text, booted["digest"], booted["version"], previous_digest,
                                    previous_version))
            if booted_id == p_staged_id:
                explained_staged = True
    elif booted_id and p_staged_id and not staged_id and rollback_id == p_staged_id and not operator_rollback:
        # Same deployment booted, the staged one gone and now under rollback: it booted, failed greenboot's checks,
        # GRUB fell back and greenboot made it permanent with `bootc rollback`.
        rollback_seen = True
        explained_staged = True
        events.append(EventSpec(
            EventKind.ROLLED_BACK,
            f"Automatic rollback: {describe(p_staged['digest'], p_staged['version'])} failed its health check at "
            f"boot; the host is back on {describe(booted['digest'], booted['version'])}",
            booted["digest"], booted["version"], p_staged["digest"], p_staged["version"], automatic=True,
            detail={"failed_digest": p_staged["digest"]},
        ))

    if staged_id and staged_id != p_staged_id:
        note = " (downloaded only: a reboot does not apply it)" if staged["download_only"] else "; boots at next reboot"
        events.append(EventSpec(EventKind.STAGED, f"Update staged: {describe(staged['digest'], staged['version'])}{note}",
                                staged["digest"], staged["version"],
                                booted["digest"] if booted else "", booted["version"] if booted else ""))
    elif p_staged_id and not staged_id and not explained_staged:
        events.append(EventSpec(EventKind.UNSTAGED, "Staged update "
                                f"{describe(p_staged['digest'], p_staged['version'])} discarded",
                                previous_digest=p_staged["digest"], previous_version=p_staged["version"]))

    if queued and not p_queued and not rollback_seen:
        target = rollback or {"digest": "", "version": ""}
        events.append(EventSpec(EventKind.ROLLBACK_QUEUED,
                                f"Rollback queued: the next boot uses {describe(target['digest'], target['version'])}",
                                target["digest"], target["version"], automatic=not operator_rollback))
    elif p_queued and not queued and booted_id == p_booted_id and not rolled_back and not rollback_seen:
        events.append(EventSpec(EventKind.ROLLBACK_CANCELLED,
                                "Queued rollback undone: the next boot stays on the current deployment"))

    update_digest, update_version = _cached(current)
    p_update_digest, _ = _cached(previous)
    if update_digest and update_digest != p_update_digest and update_digest not in (
            booted["digest"] if booted else "", staged["digest"] if staged else ""):
        events.append(EventSpec(EventKind.UPDATE_AVAILABLE,
                                f"Update available: {describe(update_digest, update_version)}",
                                update_digest, update_version))

    pinned, p_pinned = _pinned(current), _pinned(previous)
    for digest, version in pinned.items():
        if digest not in p_pinned:
            events.append(EventSpec(EventKind.PINNED, f"Deployment {describe(digest, version)} pinned", digest, version))
    deployed = _deployed(current)
    for digest, version in p_pinned.items():
        if digest not in pinned and digest in deployed:
            events.append(EventSpec(EventKind.UNPINNED, f"Deployment {describe(digest, version)} unpinned", digest,
                                    version))
    return events
