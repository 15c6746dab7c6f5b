"""Advisory feeds read from a URL on a schedule: a portal administrator gives a feed its URL (OSV's files, Red Hat's
CSAF/VEX documents, or a mirror of them inside a disconnected site) and beat reads each one that is due
(`builds.supplychain.tasks.advisory_feeds_refresh_due`). A read goes through the egress policy (`portal.egress.get`:
only to a checked address, at most SUPPLY_CHAIN_FEED_MAX_BYTES read, redirects not followed); an unchanged feed
(the same SHA-256 as what was imported last) is not imported again; a changed one is imported by
`services.feed_import`, in one transaction. A read that fails, a feed that is too large or is not OSV or CSAF
leaves the advisories as they were and the reason on the feed (`last_error`, shown on the Advisories page)."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from portal import egress
from portal.models import User
from portal.services import audit

from . import services
from .models import AdvisoryFeed

log = logging.getLogger(__name__)

READ_TIMEOUT_SECONDS = 60


def feed_source_set(*, name: str, url: str, refresh_hours: int, user: User, request=None) -> AdvisoryFeed:
    """Read feed `name` from `url` every `refresh_hours` from now on (portal administrators); an empty URL stops it.
    The URL must pass the egress policy now, and is checked again at every read."""
    if not user.is_superuser:
        raise ValidationError("Only portal administrators set where advisory feeds come from.")
    name, url = (name or "").strip()[:100], (url or "").strip()
    if not name:
        raise ValidationError("Name the feed (e.g. debian-bookworm).")
    if not 1 <= int(refresh_hours) <= 24 * 30:
        raise ValidationError("Read it every 1 to 720 hours.")
    if url:
        if not url.startswith(("https://", "http://")):
            raise ValidationError("A feed's URL starts with https:// or http://; import files by hand or with "
                                  "manage.py import_advisories.")
        try:
            egress.check_url(url, what="The feed's URL")
        except egress.EgressRefused as exc:
            raise ValidationError(str(exc)) from None
    with transaction.atomic():
        feed, _ = AdvisoryFeed.objects.select_for_update().get_or_create(name=name)
        before = feed.url
        feed.url, feed.refresh_hours, feed.checked_at = url[:500], int(refresh_hours), None
        feed.save(update_fields=["url", "refresh_hours", "checked_at"])
        audit(action="advisories.source", summary=f"feed {name} is read from {url} every {refresh_hours} h" if url
              else f"feed {name} is no longer read from a URL", actor=user, obj=feed, request=request,
              detail={"before": before, "after": url, "refresh_hours": int(refresh_hours)})
    return feed


def feed_refresh(*, feed: AdvisoryFeed, user: User | None = None, request=None) -> str:
    """Read `feed`'s URL and import it if it changed. Returns what happened, in words; a failure is also kept on the
    feed (`last_error`) and audited, and the advisories stay as they were."""
    limit = settings.SUPPLY_CHAIN_FEED_MAX_BYTES
    now = timezone.now()
    try:
        download = egress.get(feed.url, timeout=READ_TIMEOUT_SECONDS, limit=limit, what="The feed's URL")
        if download.status != 200:
            raise ValidationError(f"{feed.url} answered {download.status} {download.reason}.")
        if download.too_large:
            size = f"{download.length:,} bytes" if download.length else f"more than {limit:,} bytes"
            raise ValidationError(f"{feed.url} holds {size}; the portal takes feeds up to {limit:,} bytes "
                                  "(SUPPLY_CHAIN_FEED_MAX_BYTES). Point the feed at a smaller file (per ecosystem "
                                  "or release), or raise the setting.")
        if hashlib.sha256(download.data).hexdigest() == feed.content_sha256:
            AdvisoryFeed.objects.filter(pk=feed.pk).update(checked_at=now, last_error="")
            return f"{feed} is unchanged."
        imported = services.feed_import(name=feed.name, data=download.data, source=feed.url, user=user,
                                        request=request)
    except (ValidationError, egress.EgressRefused, OSError) as exc:
        reason = " ".join(exc.messages) if isinstance(exc, ValidationError) else str(exc) or type(exc).__name__
        with transaction.atomic():
            AdvisoryFeed.objects.filter(pk=feed.pk).update(checked_at=now, last_error=reason[:2000])
            audit(action="advisories.import_failed", summary=f"nothing imported into feed {feed} from {feed.url}: "
                  f"{reason}"[:500], actor=user, actor_name=None if user is not None else "portal", obj=feed,
                  request=request, detail={"url": feed.url, "reason": reason})
        log.warning("advisory feed %s: %s", feed, reason)
        return f"Nothing was imported into {feed}: {reason}"
    AdvisoryFeed.objects.filter(pk=feed.pk).update(checked_at=now)
    return f"Imported {imported.advisory_count} advisories into {feed}."


def feeds_due(now=None):
    """Feeds with a URL whose next read is due."""
    now = now or timezone.now()
    due = []
    for feed in AdvisoryFeed.objects.exclude(url="").filter(Q(checked_at__isnull=True) | Q(checked_at__lt=now)):
        if feed.checked_at is None or feed.checked_at + timedelta(hours=feed.refresh_hours) <= now:
            due.append(feed)
    return due


def feeds_refresh_due() -> list[str]:
    """Beat's pass: read every feed that is due, one after the other."""
    return [feed_refresh(feed=feed) for feed in feeds_due()]
