"""The audit trail: append-only, HMAC-chained, checkpointed outside the database, verified by `manage.py audit_verify`,
browsable with filters."""

import hashlib
import hmac
import json
from html.parser import HTMLParser

import pytest
from django.conf import settings
from django.contrib import admin
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client

from portal import services, tasks
from portal.admin_site import AuditedAdminMixin
from portal.models import AuditEvent

pytestmark = pytest.mark.django_db


def record(n, team=None, actor=None):
    return [services.audit(action="test.event", summary=f"event {i}", team=team, actor=actor, detail={"i": i})
            for i in range(n)]


def tamper(sql, params=()):
    """Change the table behind the portal's back, as an attacker with database access would."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE portal_auditevent DISABLE TRIGGER portal_auditevent_append_only")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE portal_auditevent ENABLE TRIGGER portal_auditevent_append_only")


class TestChain:
    def test_events_are_numbered_and_chained(self):
        first, second, third = record(3)
        assert [first.seq, second.seq, third.seq] == [1, 2, 3]
        assert first.prev_hash == AuditEvent.GENESIS_HASH
        assert second.prev_hash == first.hash and third.prev_hash == second.hash
        assert services.audit_verify() is None

    def test_the_hash_survives_a_round_trip_through_the_database(self, personas):
        services.audit(action="x", summary="unicode ✓ and nested", team=personas.team, actor=personas.developer,
                       detail={"b": [1, 2, {"z": None}], "a": "é"})
        assert services.audit_verify() is None

    def test_verify_names_an_edited_event(self):
        record(5)
        tamper("UPDATE portal_auditevent SET summary = 'nothing happened' WHERE seq = 3")
        assert services.audit_verify()[0] == 3
        with pytest.raises(CommandError, match="#3.*edited"):
            call_command("audit_verify")

    def test_verify_names_a_deleted_event(self):
        record(5)
        tamper("DELETE FROM portal_auditevent WHERE seq = 2")
        seq, message = services.audit_verify()
        assert seq == 2 and "deleted" in message

    def test_verify_names_a_reordered_event(self):
        record(4)
        tamper("UPDATE portal_auditevent SET seq = seq + 100 WHERE seq IN (2, 3)")
        tamper("UPDATE portal_auditevent SET seq = 2 WHERE seq = 103")
        tamper("UPDATE portal_auditevent SET seq = 3 WHERE seq = 102")
        assert services.audit_verify()[0] == 2

    def test_verify_reports_an_intact_chain(self, capsys):
        record(3)
        call_command("audit_verify")
        assert "intact: 3 events" in capsys.readouterr().out


def rewrite_from(seq, hash_of, **changes):
    """Edit event `seq` and recompute its hash and every later one with `hash_of(canonical bytes)`, as an attacker with
    the database would: the rewritten chain is whole, link by link."""
    events = list(AuditEvent.objects.filter(seq__gte=seq).order_by("seq"))
    prev = AuditEvent.objects.filter(seq=seq - 1).values_list("hash", flat=True).first() or AuditEvent.GENESIS_HASH
    for event in events:
        if event.seq == seq:
            for field, value in changes.items():
                setattr(event, field, value)
        event.prev_hash = prev
        event.hash = hash_of(event.canonical())
        columns = {**changes, "prev_hash": event.prev_hash, "hash": event.hash} if event.seq == seq else {
            "prev_hash": event.prev_hash, "hash": event.hash}
        assignments = ", ".join(f"{column} = %s" for column in columns)
        tamper(f"UPDATE portal_auditevent SET {assignments} WHERE seq = %s", [*columns.values(), event.seq])
        prev = event.hash


def unkeyed(data):
    return hashlib.sha256(data).hexdigest()


def keyed(data):
    return hmac.new(settings.AUDIT_HMAC_KEY.encode(), data, hashlib.sha256).hexdigest()


class TestKeyedChain:
    def test_an_event_edited_with_every_later_hash_recomputed_without_the_key_is_found(self):
        record(6)
        rewrite_from(3, unkeyed, summary="nothing happened")
        assert AuditEvent.objects.get(seq=4).prev_hash == AuditEvent.objects.get(seq=3).hash  # the links hold
        assert services.audit_verify() == (3, "event #3 does not match its hash: edited")

    def test_a_guessed_key_does_not_help_either(self):
        record(4)
        rewrite_from(2, lambda data: hmac.new(b"portal", data, hashlib.sha256).hexdigest(), summary="x")
        assert services.audit_verify()[0] == 2

    def test_even_with_the_key_a_rewrite_before_a_checkpoint_is_found(self):
        record(5)
        services.audit_checkpoint()
        rewrite_from(2, keyed, summary="nothing happened")
        seq, message = services.audit_verify()
        assert seq == 5 and "is not the one checkpointed" in message


class TestCheckpoints:
    def test_a_tail_deleted_after_a_checkpoint_is_found(self):
        record(5)
        tasks.audit_checkpoint()
        record(2)
        tamper("DELETE FROM portal_auditevent WHERE seq >= 4")
        seq, message = services.audit_verify()
        assert seq == 4 and "events #4 to #5 are missing" in message and "ends at #3" in message
        with pytest.raises(CommandError, match="#4 to #5 are missing"):
            call_command("audit_verify")

    def test_without_a_checkpoint_a_deleted_tail_leaves_a_whole_chain(self):
        record(5)
        tamper("DELETE FROM portal_auditevent WHERE seq >= 4")
        assert services.audit_verify() is None  # what the checkpoints are for

    def test_every_checkpoint_counts_not_only_the_last(self):
        record(5)
        services.audit_checkpoint()
        tamper("DELETE FROM portal_auditevent WHERE seq >= 3")
        services.audit_checkpoint()  # beat ran after the deletion: it checkpoints the shorter chain
        assert "events #3 to #5 are missing" in services.audit_verify()[1]

    def test_the_head_is_written_once_per_change(self):
        assert tasks.audit_checkpoint() is None  # nothing to checkpoint yet
        record(2)
        assert tasks.audit_checkpoint() == 2
        tasks.audit_checkpoint()
        record(1)
        tasks.audit_checkpoint()
        lines = settings.AUDIT_CHECKPOINT_PATH.read_text().splitlines()
        assert [json.loads(line)["seq"] for line in lines] == [2, 3]

    def test_a_forged_checkpoint_is_found(self):
        record(3)
        services.audit_checkpoint()
        path = settings.AUDIT_CHECKPOINT_PATH
        data = json.loads(path.read_text())
        path.write_text(json.dumps({**data, "seq": 2, "hash": AuditEvent.objects.get(seq=2).hash}) + "\n")
        assert "not signed with this AUDIT_HMAC_KEY" in services.audit_verify()[1]

    def test_an_unreadable_checkpoint_file_is_named(self):
        record(1)
        settings.AUDIT_CHECKPOINT_PATH.write_text("not json\n")
        with pytest.raises(CommandError, match="audit-checkpoints.jsonl line 1 is not a checkpoint"):
            call_command("audit_verify")

    def test_the_command_says_when_the_last_checkpoint_was_taken(self, capsys):
        record(2)
        call_command("audit_verify")
        assert "no checkpoint taken yet" in capsys.readouterr().out
        services.audit_checkpoint()
        call_command("audit_verify")
        assert "last checkpoint #2 taken" in capsys.readouterr().out

    def test_beat_takes_checkpoints(self):
        entry = settings.CELERY_BEAT_SCHEDULE["audit-checkpoint"]
        assert entry["task"] == "portal.tasks.audit_checkpoint"
        assert entry["schedule"] == settings.AUDIT_CHECKPOINT_SECONDS


class TestEscaping:
    def test_a_username_typed_with_a_line_break_cannot_forge_an_event(self, personas):
        forged = "root\n#42 auth.login: root logged in"
        Client().post("/login/", {"username": forged, "password": "x"})
        event = AuditEvent.objects.get(action="auth.login_failed")
        assert "\n" not in event.actor_name and "\n" not in event.summary
        assert event.actor_name == "root\\n#42 auth.login: root logged in"
        assert services.audit_verify() is None

    @pytest.mark.parametrize("typed, stored", [
        ("a\r\nb", "a\\r\\nb"),
        ("tab\there", "tab\\there"),
        ("bell\x07", "bell\\x07"),
        ("esc\x1b[31mred", "esc\\x1b[31mred"),
        ("nul\x00", "nul\ufffd"),
        ("line\u2028sep", "line\\u2028sep"),
        ("admin\u202egnp.exe", "admin\\u202egnp.exe"),
        ("ünïcödé ✓ 漢字", "ünïcödé ✓ 漢字"),
    ])
    def test_control_characters_are_escaped_in_every_text_field(self, personas, typed, stored):
        personas.team.name = typed
        event = services.audit(action="test.event", summary=typed, actor_name=typed, team=personas.team,
                               obj=personas.team)
        assert event.summary == event.actor_name == event.team_name == event.object_repr == stored

    def test_the_structured_detail_keeps_its_text(self):
        event = services.audit(action="test.event", summary="s", detail={"comment": "two\nlines"})
        assert AuditEvent.objects.get(pk=event.pk).detail == {"comment": "two\nlines"}


class TestAppendOnly:
    def test_the_orm_refuses_updates_and_deletes(self):
        (event,) = record(1)
        event.summary = "changed"
        with pytest.raises(TypeError):
            event.save()
        with pytest.raises(TypeError):
            event.delete()
        with pytest.raises(TypeError):
            AuditEvent.objects.all().delete()
        with pytest.raises(TypeError):
            AuditEvent.objects.update(summary="x")

    @pytest.mark.skipif(connection.vendor != "postgresql", reason="the trigger exists on PostgreSQL only")
    def test_postgresql_refuses_raw_updates(self):
        from django.db import DatabaseError

        record(1)
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE portal_auditevent SET summary = 'x'")

    def test_deleting_a_team_leaves_its_events_intact(self, personas):
        services.audit(action="x", summary="about Other", team=personas.other_team)
        personas.other_team.delete()
        assert services.audit_verify() is None
        assert AuditEvent.objects.get(summary="about Other").team_name == "Other"


class TestAuditPage:
    def test_members_see_their_teams_events_and_nobody_elses(self, personas, client_for):
        services.audit(action="build.start", summary="platform thing", team=personas.team, actor=personas.developer)
        services.audit(action="build.start", summary="other thing", team=personas.other_team, actor=personas.outsider)
        viewer_page = client_for(personas.viewer).get("/audit/").content.decode()
        assert "platform thing" in viewer_page and "other thing" not in viewer_page
        helpdesk_page = client_for(personas.helpdesk).get("/audit/").content.decode()
        assert "platform thing" not in helpdesk_page
        outsider_page = client_for(personas.outsider).get("/audit/").content.decode()
        assert "other thing" in outsider_page and "platform thing" not in outsider_page
        assert client_for(None).get("/audit/").status_code == 302

    def test_filters_by_team_actor_action_and_object(self, personas, client_for):
        services.audit(action="build.start", summary="alpha", team=personas.team, actor=personas.developer,
                       obj=personas.team)
        services.audit(action="promotion.approve", summary="beta", team=personas.team, actor=personas.approver)
        client = client_for(personas.superuser)

        def shown(**params):
            page = client.get("/audit/", params).content.decode()
            return {s for s in ("alpha", "beta") if f">{s}<" in page or f">{s}\n" in page or f"{s}<details" in page}

        assert shown(actor="approver") == {"beta"}
        assert shown(action="build.") == {"alpha"}
        assert shown(object=f"team:{personas.team.pk}") == {"alpha"}
        assert shown(team=personas.team.pk) == {"alpha", "beta"}
        assert shown(team=personas.other_team.pk) == set()

    def test_the_object_column_links_to_what_still_exists(self, personas, client_for):
        from portal.models import Team

        gone = Team.objects.create(name="Gone", slug="gone")
        services.audit(action="team.create", summary="kept", team=personas.team, obj=personas.team)
        services.audit(action="team.create", summary="removed", team=personas.team, obj=gone)
        gone_pk = gone.pk
        gone.delete()
        page = client_for(personas.superuser).get("/audit/").content.decode()
        assert f'<a href="{personas.team.get_absolute_url()}" title="portal.team:{personas.team.pk}">Platform</a>' in page
        assert f'title="portal.team:{gone_pk} (no longer there)">Gone</span>' in page

    def test_it_pages_through_many_events(self, personas, client_for):
        record(120, team=personas.team)
        client = client_for(personas.superuser)
        first = client.get("/audit/").content.decode()
        assert "Page 1 of 3" in first
        last = client.get("/audit/", {"page": 3}).content.decode()
        assert "event 0" in last and "event 119" not in last
        assert client.get("/audit/", {"page": "junk"}).status_code == 200

    def test_htmx_requests_get_only_the_table(self, personas, client_for):
        response = client_for(personas.superuser).get("/audit/", HTTP_HX_REQUEST="true")
        assert b"<nav" not in response.content and b"audit-table" in response.content or b"No events" in response.content

    def test_only_superusers_see_client_addresses(self, personas, client_for):
        services.audit(action="auth.login", summary="someone logged in", team=personas.team)
        assert b"<th>From</th>" not in client_for(personas.admin).get("/audit/").content
        assert b"<th>From</th>" in client_for(personas.superuser).get("/audit/").content

    def test_a_bad_filter_value_is_not_an_error(self, personas, client_for):
        assert client_for(personas.superuser).get("/audit/", {"team": "nope"}).status_code == 200


class FormFields(HTMLParser):
    """The fields a browser would submit from the page's main form: inputs, checked boxes, selected options, text."""

    def __init__(self):
        super().__init__()
        self.data, self._select, self._textarea = {}, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        name = attrs.get("name")
        if tag == "input" and name and attrs.get("type") not in ("submit", "button", "file"):
            if attrs.get("type") in ("checkbox", "radio"):
                if "checked" in attrs:
                    self.data[name] = attrs.get("value", "on")
            else:
                self.data[name] = attrs.get("value", "")
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in attrs:
            self.data[self._select] = attrs.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea] += data


def admin_form(client, url):
    parser = FormFields()
    parser.feed(client.get(url).content.decode())
    return parser.data


class TestAdminSite:
    def test_every_model_in_the_admin_site_is_audited(self):
        unaudited = [model._meta.label for model, model_admin in admin.site._registry.items()
                     if not isinstance(model_admin, AuditedAdminMixin)]
        assert unaudited == []

    def test_a_role_changed_in_the_team_admin_is_audited_with_the_team(self, personas, client_for):
        client = client_for(personas.superuser)
        url = f"/admin/portal/team/{personas.team.pk}/change/"
        data = admin_form(client, url)
        row = next(key.removesuffix("-user") for key, value in data.items()
                   if key.endswith("-user") and value == str(personas.viewer.pk))
        data[f"{row}-role"] = "admin"
        response = client.post(url, data)
        assert response.status_code == 302, response.content.decode()[:2000]
        assert personas.team.memberships.get(user=personas.viewer).role == "admin"
        event = AuditEvent.objects.get(action="admin.change")
        assert event.actor == personas.superuser and event.team == personas.team
        assert event.detail["changes"] == [{"changed": {"name": "membership", "object": "viewer is admin in Platform",
                                                        "fields": ["Role"]}}]
        assert services.audit_verify() is None

    def test_a_membership_deleted_in_the_team_admin_is_audited(self, personas, client_for):
        client = client_for(personas.superuser)
        url = f"/admin/portal/team/{personas.team.pk}/change/"
        data = admin_form(client, url)
        row = next(key.removesuffix("-user") for key, value in data.items()
                   if key.endswith("-user") and value == str(personas.operator.pk))
        data[f"{row}-DELETE"] = "on"
        assert client.post(url, data).status_code == 302
        assert not personas.team.memberships.filter(user=personas.operator).exists()
        event = AuditEvent.objects.get(action="admin.change")
        assert event.detail["changes"] == [{"deleted": {"name": "membership", "object": "operator is operator in Platform"}}]

    def test_making_someone_a_superuser_in_the_admin_is_audited_with_the_new_value(self, personas, client_for):
        client = client_for(personas.superuser)
        url = f"/admin/portal/user/{personas.outsider.pk}/change/"
        data = admin_form(client, url)
        data["is_superuser"] = "on"
        assert client.post(url, data).status_code == 302
        event = AuditEvent.objects.get(action="admin.change")
        assert event.object_type == "portal.user" and event.object_id == str(personas.outsider.pk)
        assert event.detail["values"] == {"is_superuser": "True"}
        assert "changed user outsider in the admin site" in event.summary

    def test_a_password_set_in_the_admin_is_audited_without_the_password(self, personas, client_for):
        client = client_for(personas.superuser)
        response = client.post(f"/admin/portal/user/{personas.viewer.pk}/password/",
                               {"password1": "another long secret 9", "password2": "another long secret 9",
                                "usable_password": "true"})
        assert response.status_code == 302
        event = AuditEvent.objects.get(action="admin.change")
        assert "another long secret" not in json.dumps(event.detail) + event.summary

    def test_deleting_a_user_in_the_admin_is_audited(self, personas, client_for):
        client = client_for(personas.superuser)
        assert client.post(f"/admin/portal/user/{personas.outsider.pk}/delete/", {"post": "yes"}).status_code == 302
        event = AuditEvent.objects.get(action="admin.delete")
        assert event.object_repr == "outsider" and event.actor == personas.superuser


class TestVerifyFromThePage:
    @pytest.mark.parametrize("who, expected", [("anonymous", 302), ("outsider", 403), ("viewer", 403),
                                               ("admin", 403), ("superuser", 302)])
    def test_only_portal_administrators_verify_the_whole_chain(self, personas, client_for, who, expected):
        record(3, team=personas.team)
        user = None if who == "anonymous" else getattr(personas, who)
        assert client_for(user).post("/audit/verify/").status_code == expected
        assert client_for(personas.superuser).get("/audit/verify/").status_code == 405
        button = "Verify the chain"
        assert (button in client_for(user).get("/audit/").content.decode()) == (who == "superuser")

    def test_an_intact_chain_says_so_and_an_edited_one_names_the_event(self, personas, client_for):
        record(3, team=personas.team)
        services.audit_checkpoint()
        client = client_for(personas.superuser)
        intact = client.post("/audit/verify/", HTTP_HX_REQUEST="true").content.decode()
        assert "alert-success" in intact and "Audit chain intact: 3 events; last checkpoint #3" in intact
        tamper("UPDATE portal_auditevent SET summary = 'nothing to see' WHERE seq = 2")
        broken = client.post("/audit/verify/", HTTP_HX_REQUEST="true").content.decode()
        assert "alert-danger" in broken and "Audit chain broken at event #2: event #2 does not match its hash" in broken
        followed = client.post("/audit/verify/", follow=True).content.decode()  # without htmx: a message on the page
        assert "Audit chain broken at event #2" in followed
