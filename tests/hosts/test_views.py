"""Host pages for anonymous, outsider, read-only, help-desk, operator and admin users; filters and paging of the list;
action confirmations; and that no page ever shows a private key (adding hosts, the CSV import and team keys are in
tests/hosts/test_inventory_views.py)."""

import pytest
from django.db import connection
from django.utils import timezone

from hosts.models import ActionKind, Host, HostAction, HostState, TeamSSHKey
from portal import ssh
from portal.models import Run
from tests.hosts.pages import D1, D2, HOST_KEY, get, is_login, make_host, post

pytestmark = pytest.mark.django_db


class TestWhoSeesWhat:
    def test_the_host_page(self, personas, client_for, host):
        url = f"/hosts/{host.pk}/"
        assert is_login(get(client_for, None, url))
        assert get(client_for, personas.outsider, url).status_code == 404
        for user in (personas.viewer, personas.helpdesk, personas.operator, personas.admin, personas.superuser):
            assert get(client_for, user, url).status_code == 200, user
        assert get(client_for, personas.viewer, "/hosts/999999/").status_code == 404

    def test_the_raw_status_page(self, personas, client_for, host):
        url = f"/hosts/{host.pk}/raw/"
        assert is_login(get(client_for, None, url))
        assert get(client_for, personas.outsider, url).status_code == 404
        assert get(client_for, personas.helpdesk, url).status_code == 200

    def test_the_output_of_a_snapshot_downloads_byte_for_byte(self, personas, client_for, host):
        from hosts.models import HostSnapshot

        printed = b'{"apiVersion": "org.containers.bootc/v1",\x00 \xff}'
        snapshot = HostSnapshot.objects.create(host=host, raw=printed.decode(errors="replace").replace("\x00", "\ufffd"),
                                               raw_bytes=printed, error="The output holds a NUL byte",
                                               status_hash="a" * 64)
        url = f"/hosts/{host.pk}/snapshots/{snapshot.pk}/output/"
        assert is_login(get(client_for, None, url))
        assert get(client_for, personas.outsider, url).status_code == 404
        for user in (personas.viewer, personas.helpdesk, personas.operator, personas.admin):
            response = get(client_for, user, url)
            assert response.status_code == 200, user
            assert response.content == printed and response["Content-Type"] == "application/octet-stream"
            assert response["Content-Disposition"].startswith('attachment; filename="web-01-bootc-status-')
        other = make_host(personas.other_team, "other-01")
        foreign = HostSnapshot.objects.create(host=other, raw="x", status_hash="b" * 64)
        assert get(client_for, personas.viewer, f"/hosts/{host.pk}/snapshots/{foreign.pk}/output/").status_code == 404
        assert get(client_for, personas.viewer, f"/hosts/{other.pk}/snapshots/{foreign.pk}/output/").status_code == 404
        readable = HostSnapshot.objects.create(host=host, raw='{"kind": "BootcHost"}', status_hash="c" * 64)
        assert get(client_for, personas.viewer, f"/hosts/{host.pk}/snapshots/{readable.pk}/output/").content == \
            b'{"kind": "BootcHost"}'
        assert client_for(personas.admin).post(url).status_code == 405

    def test_an_unreadable_host_says_so_links_the_bytes_and_dates_the_state_it_still_shows(self, personas, client_for,
                                                                                            host):
        from hosts.models import HostSnapshot

        snapshot = HostSnapshot.objects.create(host=host, raw="\ufffd", raw_bytes=b"\x00", status_hash="d" * 64,
                                               error="The output holds a NUL byte at line 1, column 1")
        host.state, host.last_error = HostState.UNREADABLE, snapshot.error
        host.save()
        page = get(client_for, personas.viewer, f"/hosts/{host.pk}/").content.decode()
        assert "Status unreadable:</strong> The output holds a NUL byte at line 1, column 1" in page
        assert f"/hosts/{host.pk}/snapshots/{snapshot.pk}/output/" in page
        assert "Below is the last status that could be read" in page
        assert "(as of " in page and "the last status that could be read)" in page  # over "Boots next"

    def test_the_list_shows_each_user_their_teams_and_help_desk_every_team(self, personas, client_for, host):
        other = make_host(personas.other_team, "other-01")
        assert is_login(get(client_for, None, "/hosts/"))
        outsider = get(client_for, personas.outsider, "/hosts/").content.decode()
        assert "other-01" in outsider and "web-01" not in outsider
        viewer = get(client_for, personas.viewer, "/hosts/").content.decode()
        assert "web-01" in viewer and other.name not in viewer
        helpdesk = get(client_for, personas.helpdesk, "/hosts/").content.decode()
        assert "web-01" in helpdesk and "other-01" in helpdesk

    @pytest.mark.parametrize("url", ["/hosts/drift/", "/hosts/fleet/", f"/hosts/digests/{D1}/"])
    def test_fleet_views(self, personas, client_for, host, url):
        make_host(personas.other_team, "other-01", drifting=True, state=HostState.DRIFT)
        host.drifting, host.state = True, HostState.DRIFT
        host.save()
        assert is_login(get(client_for, None, url))
        outsider = get(client_for, personas.outsider, url)
        assert outsider.status_code == 200 and "web-01" not in outsider.content.decode()
        helpdesk = get(client_for, personas.helpdesk, url).content.decode()
        assert "Platform" in helpdesk and "Other" in helpdesk

    def test_actions_are_for_operators_and_admins_only(self, personas, client_for, host):
        url = f"/hosts/{host.pk}/actions/reboot/"
        assert is_login(get(client_for, None, url))
        assert get(client_for, personas.outsider, url).status_code == 404
        for user in (personas.viewer, personas.developer, personas.approver, personas.helpdesk):
            assert get(client_for, user, url).status_code == 403, user
            assert post(client_for, user, url).status_code == 403, user
        assert not Run.objects.exists()
        assert get(client_for, personas.operator, url).status_code == 200
        assert get(client_for, personas.admin, url).status_code == 200

    def test_help_desk_gets_403_on_every_action_and_sees_no_buttons(self, personas, client_for, host):
        for kind in ActionKind.values:
            assert post(client_for, personas.helpdesk, f"/hosts/{host.pk}/actions/{kind}/").status_code == 403
        assert post(client_for, personas.helpdesk, f"/hosts/{host.pk}/poll/").status_code == 403
        page = get(client_for, personas.helpdesk, f"/hosts/{host.pk}/").content.decode()
        assert "/actions/" not in page and "Help-desk users see every host" in page
        assert not HostAction.objects.exists()

    def test_inventory_and_trust_are_for_team_admins(self, personas, client_for, host):
        for url in (f"/hosts/{host.pk}/edit/", f"/hosts/{host.pk}/trust/"):
            assert is_login(get(client_for, None, url))
            assert get(client_for, personas.outsider, url).status_code == 404
            for user in (personas.viewer, personas.operator, personas.helpdesk):
                assert get(client_for, user, url).status_code == 403, (user, url)
            assert get(client_for, personas.admin, url).status_code == 200
        for url in ("/hosts/new/", "/hosts/import/"):
            assert is_login(get(client_for, None, url))
            for user in (personas.viewer, personas.operator, personas.helpdesk, personas.outsider):
                assert get(client_for, user, url).status_code == 403, (user, url)
            assert get(client_for, personas.admin, url).status_code == 200
        assert post(client_for, personas.operator, f"/hosts/{host.pk}/delete/").status_code == 403
        assert Host.objects.filter(pk=host.pk).exists()

    def test_the_team_key_page_is_for_team_members_and_help_desk_sees_no_credentials(self, personas, client_for, host):
        url = f"/teams/{personas.team.slug}/ssh-key/"
        key = TeamSSHKey.objects.get(team=personas.team)
        assert is_login(get(client_for, None, url))
        assert get(client_for, personas.outsider, url).status_code == 404
        assert get(client_for, personas.helpdesk, url).status_code == 404
        page = get(client_for, personas.viewer, url).content.decode()
        assert key.public_key in page and "PRIVATE KEY" not in page
        assert post(client_for, personas.viewer, f"/teams/{personas.team.slug}/ssh-key/create/").status_code == 403

    def test_no_page_ever_shows_a_private_key(self, personas, client_for, host):
        key = TeamSSHKey.objects.get(team=personas.team)
        secret = key.private_key.split("\n")[1]  # a line of the key's body
        urls = ["/hosts/", f"/hosts/{host.pk}/", f"/hosts/{host.pk}/raw/", f"/hosts/{host.pk}/trust/",
                f"/hosts/{host.pk}/edit/", f"/hosts/{host.pk}/actions/reboot/", "/hosts/drift/", "/hosts/fleet/",
                f"/teams/{personas.team.slug}/ssh-key/", "/hosts/new/", "/hosts/import/", "/"]
        for user in (personas.admin, personas.superuser, personas.operator, personas.helpdesk, personas.viewer):
            for url in urls:
                response = get(client_for, user, url)
                body = response.content.decode()
                assert "PRIVATE KEY" not in body and secret not in body, (user, url)
        assert "PRIVATE KEY" in key.private_key  # it is there, encrypted at rest
        raw = TeamSSHKey.objects.filter(pk=key.pk).values_list("private_key", flat=True)
        assert raw  # read through the field: decrypted; the column itself holds a Fernet token
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute("SELECT private_key FROM hosts_teamsshkey WHERE id = %s", [key.pk])
            assert "PRIVATE KEY" not in cursor.fetchone()[0]


class TestEveryChangeChecksAccess:
    """Anonymous users log in; outsiders get 404; help-desk users and roles that may only read get 403 on a host's
    changes (404 on the team's key pages: those are for members); the allowed role gets through. Nothing changes on the
    way."""

    def test_polling_now_is_for_operators(self, personas, client_for, host):
        unconfirmed = make_host(personas.team, "new-01", host_key="", state=HostState.NEW)
        url = f"/hosts/{unconfirmed.pk}/poll/"
        assert is_login(post(client_for, None, url))
        assert post(client_for, personas.outsider, url).status_code == 404
        for user in (personas.helpdesk, personas.viewer, personas.developer, personas.approver):
            assert post(client_for, user, url).status_code == 403, user
        response = post(client_for, personas.operator, url)  # nothing is sent before the key is confirmed
        assert response.status_code == 302 and response["Location"] == f"/hosts/{unconfirmed.pk}/trust/"
        assert get(client_for, personas.operator, url).status_code == 405

    def test_removing_a_host_is_for_admins(self, personas, client_for, host):
        url = f"/hosts/{host.pk}/delete/"
        assert is_login(post(client_for, None, url))
        assert post(client_for, personas.outsider, url).status_code == 404
        for user in (personas.helpdesk, personas.viewer, personas.operator):
            assert post(client_for, user, url).status_code == 403, user
        assert Host.objects.filter(pk=host.pk).exists()
        assert post(client_for, personas.admin, url).status_code == 302
        assert not Host.objects.filter(pk=host.pk).exists()

    def test_editing_and_confirming_keys_by_post_are_for_admins(self, personas, client_for, host):
        _, other_key = ssh.generate_keypair("other")
        changes = [(f"/hosts/{host.pk}/edit/", {"team": personas.team.pk, "name": "renamed", "address": "10.9.9.9",
                                                "port": 22, "ssh_user": "root"}),
                   (f"/hosts/{host.pk}/trust/", {"key": other_key})]
        for url, data in changes:
            assert is_login(post(client_for, None, url, data))
            assert post(client_for, personas.outsider, url, data).status_code == 404
            for user in (personas.helpdesk, personas.viewer, personas.operator):
                assert post(client_for, user, url, data).status_code == 403, (user, url)
        host.refresh_from_db()
        assert (host.name, host.address, host.host_key) == ("web-01", "127.0.0.1", " ".join(HOST_KEY.split()[:2]))
        assert post(client_for, personas.admin, changes[0][0], changes[0][1]).status_code == 302
        host.refresh_from_db()
        assert host.name == "renamed"

    def test_team_key_jump_host_and_pending_key_changes_are_for_admins(self, personas, client_for):
        from hosts.models import JumpHost

        _, bastion_key = ssh.generate_keypair("bastion")
        _, presented = ssh.generate_keypair("new")
        waiting = make_host(personas.team, "new-01", host_key="", offered_host_key=" ".join(presented.split()[:2]),
                            state=HostState.NEW)
        slug = personas.team.slug
        jump = {"name": "bastion", "address": "10.0.0.1", "port": 22, "ssh_user": "root", "host_key": bastion_key}
        changes = [(f"/teams/{slug}/ssh-key/create/", {}), (f"/teams/{slug}/jump-hosts/", jump),
                   (f"/teams/{slug}/pending-keys/", {"host": waiting.pk})]
        for url, data in changes:
            assert is_login(post(client_for, None, url, data))
            for user in (personas.outsider, personas.helpdesk):
                assert post(client_for, user, url, data).status_code == 404, (user, url)
            for user in (personas.viewer, personas.operator):
                assert post(client_for, user, url, data).status_code == 403, (user, url)
        waiting.refresh_from_db()
        assert not TeamSSHKey.objects.exists() and not JumpHost.objects.exists() and not waiting.trusted
        for url, data in changes:
            assert post(client_for, personas.admin, url, data).status_code == 302, url
        waiting.refresh_from_db()
        assert TeamSSHKey.objects.filter(team=personas.team).exists() and waiting.trusted
        assert JumpHost.objects.get(team=personas.team).name == "bastion"


class TestTheList:
    @pytest.fixture
    def many(self, personas):
        prod, dev = personas.team.stages.get(name="prod"), personas.team.stages.get(name="dev")
        hosts = []
        for i in range(120):
            state = [HostState.UP_TO_DATE, HostState.DRIFT, HostState.UPDATE_STAGED, HostState.UNREACHABLE][i % 4]
            hosts.append(Host(team=personas.team, name=f"node-{i:03d}", address=f"10.0.{i // 250}.{i % 250}",
                              stage=prod if i % 2 else dev, state=state, drifting=state == HostState.DRIFT,
                              labels="even" if i % 2 == 0 else "odd rack=7", booted_digest=D1, status_at=timezone.now()))
        Host.objects.bulk_create(hosts)
        return hosts

    def test_pages_through_hosts_with_a_fixed_number_of_queries(self, personas, client_for, many,
                                                                 django_assert_max_num_queries):
        client = client_for(personas.viewer)
        # session, user, the user's teams and roles (once), stage names, tally, the page of hosts, and the inbox
        # badge's "in an approver group?"; 3 more for the session's first request, which records its activity
        # (portal/sessions.py; once a minute)
        with django_assert_max_num_queries(10):
            first = client.get("/hosts/")
        with django_assert_max_num_queries(7):
            client.get("/hosts/")
        assert first.status_code == 200 and "1–50 of 120" in first.content.decode()
        last = client.get("/hosts/?page=3").content.decode()
        assert "node-119" in last and "node-000" not in last

    def test_filters_by_team_stage_state_label_and_name(self, personas, client_for, many):
        client = client_for(personas.viewer)

        def names(query):
            response = client.get(f"/hosts/?{query}")
            assert response.status_code == 200
            return response.context["page"].paginator.count

        assert names("state=drift") == 30
        assert names("state=unreachable&stage=prod") == 30
        assert names("stage=dev") == 60
        assert names("label=even") == 60 and names("label=rack=7") == 60 and names("label=rack") == 0
        assert names("q=node-01") == 10
        assert names(f"team={personas.team.pk}") == 120
        assert names(f"team={personas.other_team.pk}") == 0  # not one of the viewer's teams: ignored as invalid
        assert names("state=nonsense") == 0 and names("page=999") == 120

    def test_htmx_gets_just_the_table(self, personas, client_for, many):
        response = client_for(personas.viewer).get("/hosts/?state=drift", HTTP_HX_REQUEST="true")
        body = response.content.decode()
        assert response.status_code == 200 and "<table" in body and "<nav class=\"navbar" not in body

    def test_the_fleet_view_counts_hosts_per_stage(self, personas, client_for, many):
        response = client_for(personas.viewer).get("/hosts/fleet/")
        counts = {row["stage__name"]: (row["total"], row["drifting"], row["staged"], row["problems"])
                  for row in response.context["per_stage"]}
        assert counts == {"dev": (60, 0, 30, 0), "prod": (60, 30, 0, 30)}
        assert "No hosts yet" in client_for(personas.outsider).get("/hosts/fleet/").content.decode()

    def test_the_fleet_view_counts_per_stage_the_hosts_with_an_update_available_and_lists_them(
            self, personas, client_for, many):
        """Drifting prod hosts whose check found the update (every DRIFT one) and dev hosts that staged it (found,
        but staged: not "available")."""
        Host.objects.filter(state__in=[HostState.DRIFT, HostState.UPDATE_STAGED]).update(update_digest=D2)
        Host.objects.filter(state=HostState.UPDATE_STAGED).update(staged_digest=D2)
        response = client_for(personas.viewer).get("/hosts/fleet/")
        counts = {row["stage__name"]: row["update_available"] for row in response.context["per_stage"]}
        assert counts == {"dev": 0, "prod": 30}
        page = response.content.decode()
        assert "Update available" in page and 'href="/hosts/?stage=prod&amp;only=update">30</a>' in page
        listed = client_for(personas.viewer).get("/hosts/?stage=prod&only=update")
        assert listed.context["page"].paginator.count == 30
        assert {h.state for h in listed.context["page"].object_list} == {HostState.DRIFT}
        assert client_for(personas.viewer).get("/hosts/?only=update&stage=dev").context["page"].paginator.count == 0
        outsider = client_for(personas.outsider).get("/hosts/?only=update")
        assert outsider.status_code == 200 and outsider.context["page"].paginator.count == 0
        assert client_for(personas.helpdesk).get("/hosts/?only=update").context["page"].paginator.count == 30
        assert is_login(get(client_for, None, "/hosts/?only=update"))

    def test_the_fleet_view_shows_per_stage_the_share_of_hosts_that_enforce_signatures_and_lists_the_others(
            self, personas, client_for, many):
        """Every prod host and a third of dev's booted an image bootc verified under the container policy."""
        Host.objects.filter(stage__name="prod").update(booted_signature="containerPolicy")
        dev = list(Host.objects.filter(stage__name="dev").order_by("name").values_list("pk", flat=True))
        Host.objects.filter(pk__in=dev[:20]).update(booted_signature="containerPolicy")
        Host.objects.filter(pk__in=dev[20:30]).update(booted_signature="insecure")  # older bootc's word for "no"
        response = client_for(personas.viewer).get("/hosts/fleet/")
        shares = {row["stage__name"]: (row["enforcing"], row["total"], row["enforcing_percent"])
                  for row in response.context["per_stage"]}
        assert shares == {"dev": (20, 60, 33), "prod": (60, 60, 100)}
        page = response.content.decode()
        link = f'/hosts/?team={personas.team.pk}&amp;stage=dev&amp;only=unenforced">40 do not</a>'
        assert "Enforce signatures" in page and link in page
        listed = client_for(personas.viewer).get(f"/hosts/?team={personas.team.pk}&stage=dev&only=unenforced")
        assert listed.context["page"].paginator.count == 40  # from the tally
        shown = {h.pk for h in listed.context["page"].object_list}
        assert len(shown) == 40 and not shown & set(dev[:20])
        assert client_for(personas.viewer).get("/hosts/?stage=prod&only=unenforced").context["page"].paginator.count == 0
        outsider = client_for(personas.outsider).get("/hosts/?only=unenforced")
        assert outsider.status_code == 200 and outsider.context["page"].paginator.count == 0
        assert "No hosts yet" in client_for(personas.outsider).get("/hosts/fleet/").content.decode()
        assert client_for(personas.helpdesk).get("/hosts/?only=unenforced").context["page"].paginator.count == 40
        assert is_login(get(client_for, None, "/hosts/?only=unenforced"))
        assert is_login(get(client_for, None, "/hosts/fleet/"))

    def test_the_fleet_view_counts_per_stage_the_hosts_up_to_date(self, personas, client_for, many):
        response = client_for(personas.viewer).get("/hosts/fleet/")
        counts = {row["stage__name"]: row["up_to_date"] for row in response.context["per_stage"]}
        assert counts == {"dev": 30, "prod": 0}  # every fourth node is up to date, and they are all dev's
        assert "Up to date" in response.content.decode()

    def test_the_fleet_view_lists_the_most_run_digests_of_a_repository_and_sums_up_the_rest(self, personas,
                                                                                             client_for):
        hosts = [Host(team=personas.team, name=f"own-{i:02d}", address="10.1.0.1", booted_image="r/x:prod",
                      booted_digest=f"sha256:{i:064x}", booted_version="1.0", status_at=timezone.now())
                 for i in range(14)]
        hosts += [Host(team=personas.team, name=f"shared-{i}", address="10.1.0.2", booted_image="r/x:prod",
                       booted_digest=D1, booted_version="2.0", status_at=timezone.now()) for i in range(5)]
        Host.objects.bulk_create(hosts)
        response = client_for(personas.viewer).get("/hosts/fleet/")
        [(_, rows)] = response.context["groups"]
        assert len(rows) == 10 and rows[0]["digest"] == D1 and rows[0]["n"] == 5
        assert "and 5 other digests, each run by fewer hosts than those above" in response.content.decode()

    def test_the_fleet_view_merges_a_repositorys_tags_and_ranks_ties_by_digest(self, personas, client_for,
                                                                                django_assert_max_num_queries):
        def add(name, image, digest, version="1.0"):
            return Host(team=personas.team, name=name, address="10.1.0.1", booted_image=image, booted_digest=digest,
                        booted_version=version, architecture="amd64", status_at=timezone.now())

        hosts = [add(f"tie-{i:02d}", "r/x:prod", f"sha256:{i:064x}") for i in range(12, 0, -1)]
        hosts += [add("both-1", "r/x:prod", D1, "2.0"), add("both-2", "r/x:canary", D1, "2.0"),
                  add("other", "r/y:prod", D2)]
        Host.objects.bulk_create(hosts)
        client = client_for(personas.viewer)
        client.get("/hosts/fleet/")
        # As many whatever the digests: the database ranks them. SQLite sums the tallies on every view, one query more
        # (hosts/fleet.py says why).
        with django_assert_max_num_queries(12 if connection.vendor == "postgresql" else 13):
            response = client.get("/hosts/fleet/")
        groups = dict(response.context["groups"])
        [x_key] = [key for key in groups if key[1] == "r/x"]
        x = groups[x_key]
        assert x[0]["digest"] == D1 and x[0]["n"] == 2 and x[0]["tags"] == {"prod", "canary"}
        assert x[0]["version"] == "2.0" and x[0]["architecture"] == "amd64"
        assert sorted(row["digest"] for row in x[1:]) == [f"sha256:{i:064x}" for i in range(1, 10)]
        assert response.context["others"][x_key] == {"digests": 3, "hosts": 3}
        assert [row["digest"] for _, rows in groups.items() if _[1] == "r/y" for row in rows] == [D2]

    def test_the_age_of_each_status_is_shown_and_an_old_one_stands_out(self, personas, client_for, host):
        from datetime import timedelta

        make_host(personas.team, "web-02", status_at=timezone.now() - timedelta(minutes=7))
        page = get(client_for, personas.viewer, "/hosts/").content.decode()
        fresh, old = page.split("web-01", 1)[1].split("</tr>", 1)[0], page.split("web-02", 1)[1].split("</tr>", 1)[0]
        assert 'text-body-secondary" title="Status read' in fresh and " s</span>" in fresh
        assert 'text-warning" title="Status read' in old and "7 min</span>" in old
        host_page = get(client_for, personas.viewer, f"/hosts/{Host.objects.get(name='web-02').pk}/").content.decode()
        assert "7 min ago" in host_page

    def test_an_empty_list_says_what_will_appear_and_how(self, personas, client_for):
        admin = get(client_for, personas.admin, "/hosts/").content.decode()
        assert "No hosts yet" in admin and "Add a host" in admin
        viewer = get(client_for, personas.viewer, "/hosts/").content.decode()
        assert "No hosts yet" in viewer and "team admin" in viewer


class TestActionsFromThePage:
    def test_the_confirmation_states_the_effect(self, personas, client_for, host):
        page = get(client_for, personas.operator, f"/hosts/{host.pk}/actions/reboot/").content.decode()
        assert "web-01: this REBOOTS the host" in page
        page = get(client_for, personas.operator, f"/hosts/{host.pk}/actions/rollback/").content.decode()
        assert "queues the rollback deployment 222222222222" in page and "Nothing restarts now" in page

    def test_confirming_starts_a_run_and_shows_its_log(self, personas, client_for, host):
        response = post(client_for, personas.operator, f"/hosts/{host.pk}/actions/upgrade_check/")
        action = HostAction.objects.get(host=host)
        assert response.status_code == 302 and response["Location"] == f"/hosts/{host.pk}/#action-log"
        assert action.run.kind == "host_action" and action.requested_by == personas.operator
        for user in (personas.operator, personas.helpdesk):  # help-desk watches host runs too
            host_page = get(client_for, user, f"/hosts/{host.pk}/").content.decode()
            assert f'data-ws-path="/ws/runs/{action.run_id}/"' in host_page and 'id="action-log"' in host_page
        assert get(client_for, personas.helpdesk, f"/runs/{action.run_id}/").status_code == 200

    def test_the_host_page_stops_showing_an_action_log_a_while_after_it_ended(self, personas, client_for, host):
        from datetime import timedelta

        from portal.services import run_finish

        post(client_for, personas.operator, f"/hosts/{host.pk}/actions/upgrade_check/")
        action = HostAction.objects.get(host=host)
        run_finish(action.run, status="succeeded")
        HostAction.objects.filter(pk=action.pk).update(active=False)
        assert 'id="action-log"' in get(client_for, personas.viewer, f"/hosts/{host.pk}/").content.decode()
        Run.objects.filter(pk=action.run_id).update(finished_at=timezone.now() - timedelta(hours=1))
        assert 'id="action-log"' not in get(client_for, personas.viewer, f"/hosts/{host.pk}/").content.decode()

    def test_a_second_action_while_one_runs_is_refused_with_the_reason(self, personas, client_for, host):
        post(client_for, personas.operator, f"/hosts/{host.pk}/actions/upgrade_check/")
        response = post(client_for, personas.admin, f"/hosts/{host.pk}/actions/reboot/")
        assert response.status_code == 400 and "is busy" in response.content.decode()
        assert HostAction.objects.filter(host=host).count() == 1

    def test_an_action_whose_worker_died_is_not_shown_as_running(self, personas, client_for, host):
        from datetime import timedelta

        from portal.services import reap_stale_runs

        post(client_for, personas.operator, f"/hosts/{host.pk}/actions/reboot/")
        action = HostAction.objects.get(host=host)
        assert "is running" in get(client_for, personas.operator, f"/hosts/{host.pk}/").content.decode()
        Run.objects.filter(pk=action.run_id).update(created_at=timezone.now() - timedelta(days=1))
        assert [run.pk for run in reap_stale_runs()] == [action.run_id]  # no worker ever picked it up
        page = get(client_for, personas.operator, f"/hosts/{host.pk}/").content.decode()
        assert "is running" not in page and "No worker picked it up" in page
        confirm = get(client_for, personas.operator, f"/hosts/{host.pk}/actions/upgrade_check/").content.decode()
        assert "still running" not in confirm
        assert post(client_for, personas.operator, f"/hosts/{host.pk}/actions/upgrade_check/").status_code == 302

    def test_a_switch_needs_an_image_of_the_team(self, personas, client_for, host):
        host.tracked_image = "registry.example.com/platform/web-os:prod"
        host.save()
        url = f"/hosts/{host.pk}/actions/switch/"
        refused = post(client_for, personas.operator, url, {"image": "docker.io/evil/image:latest"})
        assert refused.status_code == 400 and "not an image of Platform" in refused.content.decode()
        bad = post(client_for, personas.operator, url, {"image": "; reboot"})
        assert bad.status_code == 200 and "Enter an image reference" in bad.content.decode()
        ok = post(client_for, personas.operator, url, {"image": "registry.example.com/platform/web-os:dev"})
        assert ok.status_code == 302 and HostAction.objects.get().image == "registry.example.com/platform/web-os:dev"

    def test_unknown_actions_are_404(self, personas, client_for, host):
        assert get(client_for, personas.operator, f"/hosts/{host.pk}/actions/format-disk/").status_code == 404

    def test_no_actions_on_a_host_whose_key_changed(self, personas, client_for, host):
        host.state = HostState.HOST_KEY_CHANGED
        host.save()
        response = post(client_for, personas.operator, f"/hosts/{host.pk}/actions/reboot/")
        assert response.status_code == 400 and "different host key" in response.content.decode()


class TestLinksToBuilds:
    def test_hosts_link_to_the_build_and_definition_behind_their_digest(self, personas, client_for, host):
        from builds.models import Build, ImageDefinition, Revision
        from portal import services as portal_services

        definition = ImageDefinition.objects.create(team=personas.team, name="web-os",
                                                    repository="registry.example.com/platform/web-os",
                                                    platforms=["linux/amd64"])
        revision = Revision.objects.create(definition=definition, number=1, containerfile="FROM x", sha256="0" * 64)
        run = portal_services.run_create(kind="build", title="build", team=personas.team)
        build = Build.objects.create(definition=definition, revision=revision, number=7, run=run, digest=D1,
                                     repository=definition.repository)
        host.booted_image = "registry.example.com/platform/web-os:prod"
        host.save()
        page = get(client_for, personas.viewer, f"/hosts/{host.pk}/").content.decode()
        assert f'href="{build.get_absolute_url()}"' in page and "build #7" in page
        assert f'href="{definition.get_absolute_url()}"' in page
        fleet = get(client_for, personas.viewer, "/hosts/fleet/").content.decode()
        assert f'href="{definition.get_absolute_url()}"' in fleet and "build #7" in fleet
        assert f"/hosts/digests/{D1}/" in fleet
        digest_page = get(client_for, personas.viewer, f"/hosts/digests/{D1}/").content.decode()
        assert "web-01" in digest_page and "web-os build #7" in digest_page
        # Help-desk users read hosts of every team but not the team's builds: no build links for them.
        assert "build #7" not in get(client_for, personas.helpdesk, f"/hosts/{host.pk}/").content.decode()
        assert Host.objects.visible_to(personas.viewer).by_digest([D1, D2]) == {D1: 1}


class TestNoServerErrors:
    @pytest.mark.parametrize("query", [
        "page=abc", "page=-1", "page=99999999999999999999", "team=abc", "team=-1", "stage=%00", "state=%27%3B",
        "label=" + "x" * 5000, "q=%E2%80%AE%00", "q=" + "%" * 100, "state=drift&state=up_to_date",
    ])
    def test_odd_list_queries_are_answered(self, personas, client_for, host, query):
        for url in ("/hosts/", "/hosts/drift/"):
            assert get(client_for, personas.viewer, f"{url}?{query}").status_code == 200, (url, query)

    @pytest.mark.parametrize("text", ["\x00\x01\x02", "name,address\n" + "a" * 200_000 + ",b\n", "name,address\n\"x",
                                      "\ufeffname,address\nweb-9,10.0.0.9\n", "name,address\n,,,,,,,,,,,\n"])
    def test_odd_csv_is_reported_not_crashed(self, personas, client_for, text):
        response = post(client_for, personas.admin, "/hosts/import/", {"team": personas.team.pk, "text": text})
        assert response.status_code in (200, 400)

    def test_a_binary_upload_is_refused_with_the_reason(self, personas, client_for):
        from django.core.files.uploadedfile import SimpleUploadedFile

        upload = SimpleUploadedFile("hosts.csv", b"\xff\xfe\x00garbage", content_type="text/csv")
        response = client_for(personas.admin).post("/hosts/import/", {"team": personas.team.pk, "file": upload})
        assert response.status_code == 400 and "not UTF-8" in response.content.decode()

    def test_an_upload_holding_a_nul_is_refused_naming_its_line(self, personas, client_for):
        from django.core.files.uploadedfile import SimpleUploadedFile

        upload = SimpleUploadedFile("hosts.csv", b"name,address,labels\nweb-01,127.0.0.1,eu\x00web\n")
        response = client_for(personas.admin).post("/hosts/import/", {"team": personas.team.pk, "file": upload})
        assert response.status_code == 400 and not Host.objects.exists()
        assert "Line 2 of the file holds a NUL character (column 20)" in response.content.decode()


def test_the_admin_site_never_shows_a_private_key(personas, client_for, host):
    key = TeamSSHKey.objects.get(team=personas.team)
    for url in ("/admin/hosts/teamsshkey/", f"/admin/hosts/teamsshkey/{key.pk}/change/", "/admin/hosts/host/",
                f"/admin/hosts/host/{host.pk}/change/"):
        response = get(client_for, personas.superuser, url)
        assert response.status_code == 200 and "PRIVATE KEY" not in response.content.decode(), url


def test_a_switch_may_target_the_teams_image_definitions(personas, client_for, host):
    from builds.models import ImageDefinition

    ImageDefinition.objects.create(team=personas.team, name="edge-os", repository="registry.example.com/platform/edge-os",
                                   platforms=["linux/amd64"])
    ImageDefinition.objects.create(team=personas.other_team, name="theirs", repository="registry.example.com/other/os",
                                   platforms=["linux/amd64"])
    url = f"/hosts/{host.pk}/actions/switch/"
    page = get(client_for, personas.operator, url).content.decode()
    assert "registry.example.com/platform/edge-os" in page and "registry.example.com/other/os" not in page
    refused = post(client_for, personas.operator, url, {"image": "registry.example.com/other/os:prod"})
    assert refused.status_code == 400
    ok = post(client_for, personas.operator, url, {"image": "registry.example.com/platform/edge-os:prod"})
    assert ok.status_code == 302


@pytest.mark.parametrize("signature, label", [
    ("containerPolicy", "signature enforced"),
    ("", "not enforced"),
    ("insecure", "not enforced"),
    ("ostreeRemote:fedora", "ostree remote fedora"),
])
def test_the_host_page_says_how_bootc_verified_the_booted_image(personas, client_for, signature, label):
    image = {"image": "r/x:prod", "digest": D1, "version": "1.0", "signature": signature}
    host = make_host(personas.team, "web-09", status={"booted": {"image": image}})
    page = get(client_for, personas.viewer, f"/hosts/{host.pk}/").content.decode()
    assert f'data-signature="{signature or "none"}"' in page
    assert f"</i> {label}</span>" in page
