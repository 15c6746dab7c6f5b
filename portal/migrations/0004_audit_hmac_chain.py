"""Rehash the audit chain with HMAC-SHA256 under AUDIT_HMAC_KEY (it was plain SHA-256, which anyone who can write the
database can recompute). The canonical form is frozen here as it was when this migration was written."""

import hashlib
import hmac
import json

from django.conf import settings
from django.db import migrations

GENESIS_HASH = "0" * 64


def _canonical(event, prev_hash):
    fields = {
        "seq": event.seq,
        "created_at": event.created_at.isoformat(timespec="microseconds"),
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "object_repr": event.object_repr,
        "team_id": event.team_id,
        "team_name": event.team_name,
        "summary": event.summary,
        "detail": event.detail,
        "ip_address": event.ip_address,
        "prev_hash": prev_hash,
    }
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode()


def _set_trigger(schema_editor, state):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE portal_auditevent {state} TRIGGER portal_auditevent_append_only")


def rehash(apps, schema_editor):
    AuditEvent = apps.get_model("portal", "AuditEvent")
    key = settings.AUDIT_HMAC_KEY.encode()
    events = list(AuditEvent.objects.order_by("seq"))
    if not events:
        return
    _set_trigger(schema_editor, "DISABLE")
    # Hashes are unique: move every old one aside first, so no new hash can collide with an old one mid-way.
    for event in events:
        AuditEvent.objects.filter(pk=event.pk).update(hash=f"old-{event.pk}")
    prev_hash = GENESIS_HASH
    for event in events:
        new_hash = hmac.new(key, _canonical(event, prev_hash), hashlib.sha256).hexdigest()
        AuditEvent.objects.filter(pk=event.pk).update(prev_hash=prev_hash, hash=new_hash)
        prev_hash = new_hash
    _set_trigger(schema_editor, "ENABLE")


class Migration(migrations.Migration):
    dependencies = [("portal", "0003_log_sections")]
    operations = [migrations.RunPython(rehash, migrations.RunPython.noop)]
