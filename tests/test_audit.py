"""The audit trail: append-only, hash-chained, verified by `manage.py audit_verify`, browsable with filters."""

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction

from portal import services
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
