"""Runtime changes across the fleet: per stage, how many hosts changed since they booted their image and which
changes they share ("/etc/chrony.conf on 2 of 3 hosts"), counted in the database in a fixed number of queries; the
host list's "Only: changed at runtime" filter."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from builds.models import Build
from builds.releases.models import Stage
from hosts import runtime
from hosts.models import Host, HostState, RuntimeChange
from hosts.simruntime import IMAGE_PACKAGES
from tests.diskimages.rows import succeeded_build

pytestmark = pytest.mark.django_db

DIGEST = "sha256:" + "7" * 64


def packages(**extra):
    return "#format rpm\n" + "".join(f"{n}\t{v}\tx86_64\n" for n, v in {**IMAGE_PACKAGES, **extra}.items())


@pytest.fixture
def prod_hosts(personas):
    build = succeeded_build(personas.team, personas.developer, digest=DIGEST)
    Build.objects.filter(pk=build.pk).update(package_format="rpm", packages=IMAGE_PACKAGES)
    prod = Stage.objects.get(team=personas.team, name="prod")
    return [Host.objects.create(team=personas.team, name=f"web-{i:02d}", address="192.0.2.1", stage=prod,
                                state=HostState.UP_TO_DATE, is_bootc=True, booted_digest=DIGEST,
                                status_at=timezone.now()) for i in range(3)]


def read_all(hosts):
    runtime.runtime_record(hosts[0], config_diff="M    chrony.conf\nA    sysctl.d/90-tuning.conf\n",
                           package_output=packages(htop="3.3-1"))
    runtime.runtime_record(hosts[1], config_diff="M    chrony.conf\n", package_output=packages())
    runtime.runtime_record(hosts[2], config_diff="", package_output=packages())


def test_the_common_changes_of_a_stage_are_counted_over_its_hosts(personas, client_for, prod_hosts):
    read_all(prod_hosts)
    response = client_for(personas.viewer).get("/hosts/fleet/runtime/")
    group = next(g for g in response.context["groups"] if g["stage"] == "prod")
    assert (group["hosts"], group["read"], group["changed"]) == (3, 3, 2)
    assert [(row["kind"], row["name"], row["n"]) for row in group["top"]] == [
        ("etc", "/etc/chrony.conf", 2), ("etc", "/etc/sysctl.d/90-tuning.conf", 1), ("package_added", "htop", 1)]
    page = response.content.decode()
    assert "2 of 3 hosts changed" in page and "on 2 of 3" in page and "/etc/chrony.conf" in page

    runtime.runtime_record(prod_hosts[1], config_diff="", package_output=packages())  # put back: its rows go
    prod_hosts[0].delete()  # and a deleted host's go with it
    assert not RuntimeChange.objects.exists()
    group = next(g for g in client_for(personas.viewer).get("/hosts/fleet/runtime/").context["groups"]
                 if g["stage"] == "prod")
    assert (group["hosts"], group["changed"], group["top"]) == (2, 0, [])


def test_the_host_list_filters_hosts_changed_at_runtime(personas, client_for, prod_hosts):
    read_all(prod_hosts)
    listed = client_for(personas.viewer).get("/hosts/?only=runtime")
    assert [h.name for h in listed.context["page"].object_list] == ["web-00", "web-01"]
    assert listed.context["page"].paginator.count == 2
    assert client_for(personas.viewer).get("/hosts/?only=runtime&stage=dev").context["page"].paginator.count == 0


def test_who_sees_the_fleets_runtime_changes(personas, client_for, prod_hosts):
    read_all(prod_hosts)
    url = "/hosts/fleet/runtime/"
    assert client_for(None).get(url).status_code == 302  # to the login page
    outsider = client_for(personas.outsider).get(url)
    assert outsider.status_code == 200 and "chrony.conf" not in outsider.content.decode()
    assert "Nothing read yet" in outsider.content.decode()
    for user in (personas.helpdesk, personas.viewer, personas.operator):
        assert "/etc/chrony.conf" in client_for(user).get(url).content.decode(), user
    assert client_for(personas.outsider).get("/hosts/?only=runtime").context["page"].paginator.count == 0


def test_the_page_costs_the_same_queries_for_more_hosts(personas, client_for, prod_hosts):
    read_all(prod_hosts)
    client = client_for(personas.viewer)
    client.get("/hosts/fleet/runtime/")
    with CaptureQueriesContext(connection) as few:
        client.get("/hosts/fleet/runtime/")
    prod = prod_hosts[0].stage
    for i in range(30):
        host = Host.objects.create(team=personas.team, name=f"db-{i:02d}", address="192.0.2.2", stage=prod,
                                   booted_digest=DIGEST, is_bootc=True)
        runtime.runtime_record(host, config_diff=f"M    chrony.conf\nA    app/{i}.conf\n", package_output=packages())
    with CaptureQueriesContext(connection) as many:
        page = client.get("/hosts/fleet/runtime/")
    assert len(many) == len(few)
    assert "on 32 of 33" in page.content.decode()
