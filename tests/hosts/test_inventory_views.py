"""A team's host inventory pages (hosts/views_inventory.py) for every kind of user: adding hosts, the CSV import with
bad rows, and the team's SSH keys, whose private half no page ever shows."""

import pytest

from hosts.models import Host, HostState, TeamSSHKey
from portal import ssh
from portal.models import AuditEvent
from tests.hosts.pages import HOST_KEY, get, make_host, post

pytestmark = pytest.mark.django_db


class TestAddingHosts:
    def test_an_admin_adds_a_host_with_a_pasted_key_and_it_is_trusted(self, personas, client_for):
        response = post(client_for, personas.admin, "/hosts/new/", {
            "team": personas.team.pk, "name": "db-01", "address": "db-01.example.com", "port": 22,
            "ssh_user": "core", "stage": personas.team.stages.get(name="prod").pk,
            "tracked_image": "registry.example.com/platform/db-os", "labels": "db, eu", "host_key": HOST_KEY,
        })
        host = Host.objects.get(name="db-01")
        assert response.status_code == 302 and response["Location"] == f"/hosts/{host.pk}/"
        assert host.tracked_image == "registry.example.com/platform/db-os:prod"  # the stage's tag was added
        assert host.labels == "db eu" and host.trusted and host.host_key_confirmed_by == personas.admin
        assert AuditEvent.objects.filter(action="hosts.create", object_id=str(host.pk)).exists()

    def test_without_a_key_the_admin_is_sent_to_compare_fingerprints(self, personas, client_for):
        response = post(client_for, personas.admin, "/hosts/new/", {
            "team": personas.team.pk, "name": "db-02", "address": "127.0.0.1", "port": 1, "ssh_user": "root"})
        host = Host.objects.get(name="db-02")
        assert response["Location"] == f"/hosts/{host.pk}/trust/" and not host.trusted
        page = get(client_for, personas.admin, response["Location"]).content.decode()
        assert "Could not fetch it" in page  # nothing listens on port 1; nothing is trusted either
        confirmed = post(client_for, personas.admin, response["Location"], {"key": HOST_KEY})
        assert confirmed.status_code == 302
        host.refresh_from_db()
        assert host.trusted and host.host_key_fingerprint == ssh.fingerprint(HOST_KEY)
        assert AuditEvent.objects.filter(action="hosts.key_confirm").exists()

    @pytest.mark.parametrize("field, value, message", [
        ("name", "", "required"), ("address", "", "required"), ("port", "70000", "less than or equal"),
        ("tracked_image", "not a reference!", "image reference"), ("host_key", "ssh-ed25519 nope", "key"),
    ])
    def test_bad_input_is_explained(self, personas, client_for, field, value, message):
        data = {"team": personas.team.pk, "name": "x", "address": "x", "port": 22, "ssh_user": "root", field: value}
        response = post(client_for, personas.admin, "/hosts/new/", data)
        assert response.status_code == 400 and message in response.content.decode()
        assert not Host.objects.exists()

    def test_a_duplicate_name_in_the_team_is_refused(self, personas, client_for, host):
        response = post(client_for, personas.admin, "/hosts/new/", {
            "team": personas.team.pk, "name": "web-01", "address": "x", "port": 22, "ssh_user": "root"})
        assert response.status_code == 400 and "already has a host called web-01" in response.content.decode()


class TestImport:
    def test_each_row_is_reported_and_the_valid_ones_are_imported(self, personas, client_for, host):
        csv_text = "\n".join([
            "name,address,port,user,labels,stage,image,host_key",
            "ok-01,10.0.0.1,22,root,web eu,prod,registry.example.com/platform/web-os,",
            f"ok-02,10.0.0.2,2222,core,,dev,,{HOST_KEY}",
            "bad-port,10.0.0.3,notaport,root,,,,",
            "bad-stage,10.0.0.4,22,root,,nosuchstage,,",
            ",10.0.0.5,22,root,,,,",
            "no-address,,22,root,,,,",
            "web-01,10.0.0.6,22,root,,,,",
            "bad-image,10.0.0.7,22,root,,,not an image,",
            "bad-key,10.0.0.8,22,root,,,,ssh-rsa AAAA",
            "",
        ])
        response = post(client_for, personas.admin, "/hosts/import/", {"team": personas.team.pk, "text": csv_text})
        assert response.status_code == 200
        report = {row.line: (row.ok, row.message) for row in response.context["report"]}
        assert report[2][0] and report[3][0]
        assert "Port" in report[4][1] and "no stage" in report[5][1] and "name" in report[6][1].lower()
        assert "address" in report[7][1] and "already has a host" in report[8][1]
        assert "image reference" in report[9][1] and not report[10][0]
        assert set(Host.objects.values_list("name", flat=True)) == {"web-01", "ok-01", "ok-02"}
        assert Host.objects.get(name="ok-01").tracked_image == "registry.example.com/platform/web-os:prod"
        assert Host.objects.get(name="ok-02").trusted and not Host.objects.get(name="ok-01").trusted

    def test_a_file_without_the_required_columns_is_refused_with_the_reason(self, personas, client_for):
        response = post(client_for, personas.admin, "/hosts/import/", {"team": personas.team.pk,
                                                                        "text": "host,ip\nweb,1.2.3.4\n"})
        [row] = response.context["report"]
        assert not row.ok and "name and address" in row.message and not Host.objects.exists()

    def test_only_the_admins_teams_can_be_imported_into(self, personas, client_for):
        response = post(client_for, personas.admin, "/hosts/import/", {"team": personas.other_team.pk,
                                                                        "text": "name,address\nx,y\n"})
        assert response.status_code == 400 and not Host.objects.exists()



class TestTeamKeys:
    def test_an_admin_generates_the_key_once_and_sees_the_kickstart_line(self, personas, client_for):
        url = f"/teams/{personas.team.slug}/ssh-key/"
        assert "Generate the team" in get(client_for, personas.admin, url).content.decode()
        post(client_for, personas.admin, f"{url}create/")
        post(client_for, personas.admin, f"{url}create/")
        key = TeamSSHKey.objects.get(team=personas.team)
        page = get(client_for, personas.admin, url).content.decode()
        assert key.public_key in page and "sshkey --username=root" in page
        assert AuditEvent.objects.filter(action="hosts.key_create").count() == 1

    def test_pending_keys_are_confirmed_only_if_the_fingerprint_is_still_the_one_shown(self, personas, client_for):
        _, presented = ssh.generate_keypair("h")
        host = make_host(personas.team, "new-01", host_key="", offered_host_key=" ".join(presented.split()[:2]),
                         state=HostState.NEW)
        url = f"/teams/{personas.team.slug}/pending-keys/"
        post(client_for, personas.admin, url, {"host": host.pk, f"fp-{host.pk}": "SHA256:something-else"})
        host.refresh_from_db()
        assert not host.trusted
        post(client_for, personas.admin, url, {"host": host.pk, f"fp-{host.pk}": ssh.fingerprint(presented)})
        host.refresh_from_db()
        assert host.trusted
