"""Drift: what each tracked reference resolves to per architecture (`ReferenceDigest`), and, measured against it, each
host's expected digest, `drifting` flag and state. Promotions (through `promotion_applied`) and the tag resolution
record digests here; the poller judges every status it records with `apply_expected`."""

from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from . import bootc, notifications, registry
from .connect import setting
from .models import Host, HostState, ReferenceDigest


def expected_by_reference(references):
    references = {r for r in references if r}
    out = {}
    for row in ReferenceDigest.objects.filter(reference__in=references).values_list("reference", "architecture",
                                                                                   "digest"):
        out.setdefault(row[0], {})[row[1]] = row[2]
    return out


def reference_digests_set(*, reference, digests, version="", source="registry"):
    """Record what `reference` resolves to ({architecture: digest}, "" for the top level) and re-evaluate drift of every
    host that tracks it. Promotions call this when they move a stage tag; the poller when it resolves tags."""
    digests = {arch or "": digest for arch, digest in digests.items() if digest}
    with transaction.atomic():
        current = dict(ReferenceDigest.objects.filter(reference=reference).values_list("architecture", "digest"))
        if current == digests:
            ReferenceDigest.objects.filter(reference=reference).update(resolved_at=timezone.now())
            return False
        ReferenceDigest.objects.filter(reference=reference).exclude(architecture__in=list(digests)).delete()
        for arch, digest in digests.items():
            ReferenceDigest.objects.update_or_create(
                reference=reference, architecture=arch,
                defaults={"digest": digest, "version": version[:200], "source": source, "resolved_at": timezone.now()},
            )
        hosts = Host.objects.filter(Q(tracked_image=reference) | Q(tracked_image="", spec_image=reference))
        refresh_expected(hosts)
    return True


def refresh_expected(hosts):
    hosts = list(hosts)
    expected = expected_by_reference({h.reference for h in hosts})
    drifting_before = {host.pk: host.drifting for host in hosts}
    changed = []
    for host in hosts:
        before = (host.expected_digest, host.drifting, host.state)
        if host.state in (HostState.NEW, HostState.UNREACHABLE, HostState.AUTH_FAILED, HostState.HOST_KEY_CHANGED,
                          HostState.UNREADABLE):
            digests = expected.get(host.reference) or {}
            booted = bootc.ImageInfo(digest=host.booted_digest, architecture=host.architecture)
            host.expected_digest = (digests.get(host.architecture) or digests.get("") or "") if digests else ""
            host.drifting = bool(digests) and bool(host.booted_digest) and not bootc.digest_matches(booted, digests)
        else:
            apply_expected(host, expected)
        if (host.expected_digest, host.drifting, host.state) != before:
            changed.append(host)
    Host.objects.bulk_update(changed, ["expected_digest", "drifting", "state"], batch_size=500)
    notifications.notify_drift_started(drifting_before, changed)
    return changed


def refresh_reference_digests(*, max_age_seconds=None):
    """Resolve every reference hosts track (once each) in the registry, and record the digests."""
    max_age = timedelta(seconds=max_age_seconds if max_age_seconds is not None else
                        setting("HOSTS_REFERENCE_MAX_AGE_SECONDS", 60))
    references = set(Host.objects.exclude(tracked_image="").values_list("tracked_image", flat=True).distinct())
    references |= set(Host.objects.filter(tracked_image="").exclude(spec_image="").values_list("spec_image", flat=True)
                      .distinct())
    fresh = set(ReferenceDigest.objects.filter(reference__in=references, resolved_at__gte=timezone.now() - max_age)
                .values_list("reference", flat=True))
    results = {}
    for reference in sorted(references - fresh):
        try:
            digests = registry.resolve_digests(reference)
        except registry.ResolveError as exc:
            results[reference] = str(exc)
            continue
        reference_digests_set(reference=reference, digests=digests, source="registry")
        results[reference] = digests
    return results



def apply_expected(host, expected):
    """Set expected_digest, drifting and state from the denormalised fields and the reference's digests."""
    reference = host.reference
    digests = expected.get(reference) or {}
    booted = bootc.ImageInfo(digest=host.booted_digest, architecture=host.architecture)
    if digests:
        host.expected_digest = digests.get(host.architecture) or digests.get("") or next(iter(digests.values()))
    else:
        host.expected_digest = ""
    host.drifting = bool(digests) and bool(host.booted_digest) and not bootc.digest_matches(booted, digests)
    host.state = compute_state(host, digests)


def compute_state(host, digests):
    if not host.is_bootc:
        return HostState.NOT_BOOTC
    if host.rolled_back:
        return HostState.ROLLED_BACK
    if host.staged_digest:
        staged = bootc.ImageInfo(digest=host.staged_digest, architecture=host.architecture)
        if not digests or bootc.digest_matches(staged, digests) or not host.drifting:
            return HostState.UPDATE_STAGED
        return HostState.DRIFT
    if not digests:
        return HostState.RUNNING
    return HostState.DRIFT if host.drifting else HostState.UP_TO_DATE
