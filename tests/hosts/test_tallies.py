"""The maintained host counts (hosts.HostTally, hosts.DigestTally): kept by database triggers, they equal a real
COUNT(*) after every kind of write, whoever makes it, and after compaction."""

from collections import Counter

import pytest
from django.db.models import Sum

from builds.releases.models import Stage
from hosts import services
from hosts.models import Host, HostState
from hosts.tallies import DigestTally, HostTally, tally_counts
from portal.models import Team

pytestmark = pytest.mark.django_db(transaction=True)
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def counted():
    """What a COUNT(*) over the hosts says, per tally key."""
    hosts = Counter((h.team_id, h.stage_id, h.state, h.drifting, bool(h.update_digest) and not h.staged_digest,
                     h.booted_signature == "containerPolicy") for h in Host.objects.all())
    digests = Counter((h.team_id, h.booted_image, h.booted_digest, h.booted_version, h.architecture)
                      for h in Host.objects.exclude(booted_digest=""))
    return dict(hosts), dict(digests)


def tallied():
    hosts = {(r["team_id"], r["stage_id"], r["state"], r["drifting"], r["update_available"], r["enforcing"]): r["total"]
             for r in HostTally.objects.values("team_id", "stage_id", "state", "drifting", "update_available",
                                               "enforcing").annotate(total=Sum("n")) if r["total"]}
    digests = {(r["team_id"], r["booted_image"], r["booted_digest"], r["booted_version"], r["architecture"]): r["total"]
               for r in DigestTally.objects.values("team_id", "booted_image", "booted_digest", "booted_version",
                                                   "architecture").annotate(total=Sum("n")) if r["total"]}
    return hosts, digests


def test_the_tallies_follow_every_kind_of_write(personas):
    team, other = personas.team, personas.other_team
    prod = Stage.objects.create(team=team, name="canary", position=9)
    hosts = [Host.objects.create(team=team, name=f"h{i}", address="127.0.0.1", stage=prod if i % 2 else None)
             for i in range(6)]
    Host.objects.bulk_create([Host(team=other, name=f"o{i}", address="127.0.0.1") for i in range(3)])
    assert tallied() == counted()

    hosts[0].state, hosts[0].drifting, hosts[0].booted_digest = HostState.DRIFT, True, D1
    hosts[0].save(update_fields=["state", "drifting", "booted_digest"])
    Host.objects.filter(team=team, name__in=["h1", "h2"]).update(state=HostState.UP_TO_DATE, booted_digest=D2,
                                                                 booted_image="r/x:prod", architecture="amd64")
    Host.objects.filter(name="h3").update(state=HostState.UP_TO_DATE)  # the same again: no change, no tally row
    Host.objects.filter(name="h3").update(state=HostState.UP_TO_DATE)
    Host.objects.filter(name="h4").update(team=other)
    assert tallied() == counted()

    services.tallies_compact()
    assert tallied() == counted()
    assert HostTally.objects.count() == len(counted()[0])  # one row per key after compaction

    hosts[5].delete()
    prod.delete()  # the stage's hosts lose it (SET NULL)
    assert tallied() == counted()
    Team.objects.filter(pk=other.pk).delete()  # its hosts go with it (CASCADE), and their counts
    assert tallied() == counted()
    services.tallies_compact()
    assert tallied() == counted()
    assert not HostTally.objects.filter(team_id=other.pk).exists()


def test_counts_are_read_from_the_tally(personas):
    team = personas.team
    Host.objects.bulk_create([Host(team=team, name=f"h{i}", address="127.0.0.1",
                                   state=HostState.DRIFT if i < 3 else HostState.UP_TO_DATE, drifting=i < 3)
                              for i in range(10)])
    counts = tally_counts([team.pk])
    assert sum(counts.values()) == 10
    assert sum(n for (_, _, state, _), n in counts.items() if state == HostState.DRIFT) == 3


@pytest.mark.parametrize("url", ["/", "/hosts/", "/hosts/?state=drift", "/hosts/?stage=-", "/hosts/?only=update",
                                 "/hosts/?only=unenforced", "/hosts/fleet/"])
def test_pages_never_count_the_fleet(personas, client_for, url):
    """The dashboard, the host list (unfiltered, by state, by stage) and the fleet view read their counts from the
    tallies: no COUNT over hosts_host, and no GROUP BY over it."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    Host.objects.bulk_create([Host(team=personas.team, name=f"h{i}", address="127.0.0.1", booted_digest=D1,
                                   state=HostState.DRIFT, drifting=True) for i in range(60)])
    client = client_for(personas.viewer)
    client.get(url)
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    fleet_wide = [q["sql"] for q in queries if 'FROM "hosts_host"' in q["sql"]
                  and ("COUNT(" in q["sql"] or "GROUP BY" in q["sql"])]
    assert fleet_wide == []


def test_the_fleet_view_sums_the_tallies_again_only_after_a_tally_row_changed(personas, client_for):
    """The fleet view keeps its sums while no tally row of the teams changed (PostgreSQL), and shows every change at
    once: a host moving to another digest, a host deleted, and compaction (which changes rows, not sums)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    hosts = Host.objects.bulk_create([Host(team=personas.team, name=f"h{i}", address="127.0.0.1", booted_digest=D1,
                                           state=HostState.UP_TO_DATE) for i in range(4)])
    client = client_for(personas.viewer)

    def fleet_view():
        return client.get("/hosts/fleet/").content.decode()

    assert "4 hosts" in fleet_view()
    with CaptureQueriesContext(connection) as queries:
        client.get("/hosts/fleet/")
    summed = [q["sql"] for q in queries if "GROUP BY" in q["sql"] and "tally" in q["sql"]]
    if connection.vendor == "postgresql":  # SQLite sums every time (hosts/fleet.py says why)
        assert summed == []

    Host.objects.filter(pk=hosts[0].pk).update(booted_digest=D2)
    page = fleet_view()
    assert "3 hosts" in page and "1 host<" in page
    Host.objects.filter(pk=hosts[1].pk).delete()
    assert "2 hosts" in fleet_view()
    services.tallies_compact()
    page = fleet_view()
    assert "2 hosts" in page and "1 host<" in page


def test_an_answer_a_minute_old_is_served_at_once_and_summed_again_by_a_worker(personas, client_for):
    """Time alone never makes a reader wait for the sums (about 300 ms at 100,000 hosts on digests of their own): the
    view serves the answer it has and queues one refresh, however many readers come; the worker's sums replace it."""
    import time

    from django.core.cache import cache
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from hosts import fleet, tasks

    if connection.vendor != "postgresql":
        pytest.skip("SQLite sums on every view (hosts/fleet.py says why)")
    Host.objects.bulk_create([Host(team=personas.team, name=f"h{i}", address="127.0.0.1", booted_digest=D1,
                                   state=HostState.UP_TO_DATE) for i in range(3)])
    client = client_for(personas.viewer)
    assert "3 hosts" in client.get("/hosts/fleet/").content.decode()
    key = fleet._key([personas.team.pk], None)
    summed_at, found = cache.get(key)
    cache.set(key, (summed_at - fleet.CACHE_SECONDS, found), fleet.KEEP_SECONDS)  # a minute on

    for _ in range(2):
        with CaptureQueriesContext(connection) as queries:
            page = client.get("/hosts/fleet/").content.decode()
        assert "3 hosts" in page
        assert [q["sql"] for q in queries if "GROUP BY" in q["sql"] and "tally" in q["sql"]] == []
    assert cache.get(f"{key}:refreshing") == 1  # one refresh queued for both readers

    tasks.fleet_tallies_refresh([personas.team.pk], None)  # what the worker runs
    assert cache.get(key)[0] > time.time() - 5
    assert cache.get(f"{key}:refreshing") is None


def status_with(booted, *, cached=None, staged=None, signature=""):
    """`bootc status --format=json` of a simulated host booting `booted`, with `bootc upgrade --check`'s cachedUpdate
    (`cached`) and a staged deployment (`staged`), as the simulator's state machine prints it."""
    from hosts.simbootc import FAULTS, BootcMachine, Deployment
    from hosts.simbootc import HostState as SimState

    reference = "registry.example.com/platform/web-os:prod"
    machine = BootcMachine()
    machine.faults = dict(FAULTS)

    def deployment(digest):
        return Deployment(image=reference, digest=digest, version=digest[7:10], checksum=digest[-64:],
                          signature=signature)

    machine.state = SimState(name="web", spec_image=reference, booted=deployment(booted),
                             staged=deployment(staged) if staged else None,
                             cached_update={"architecture": "amd64", "imageDigest": cached, "version": cached[7:10],
                                            "image": {"image": reference, "transport": "registry"}}
                             if cached else None)
    return machine.cmd_status(["--format=json"]).encode()


def available(team, stage=None):
    counts = tally_counts([team.pk], update_available=True)
    return sum(n for (_, stage_id, _, _), n in counts.items() if stage is None or stage_id == stage.pk)


class TestUpdateAvailable:
    """The tally's update_available (an update found by `bootc upgrade --check`, not staged yet) follows every path
    that changes what a host has found or staged, and every path that moves a host between keys."""

    def record(self, host, raw):
        from hosts.poller import PollOutcome, record_outcome

        record_outcome(host, PollOutcome(host.pk, raw=raw, exit_status=0))
        host.refresh_from_db()

    def test_a_poll_that_finds_stages_and_boots_the_update(self, personas):
        prod = Stage.objects.create(team=personas.team, name="canary", position=9)
        host = Host.objects.create(team=personas.team, name="web-01", address="127.0.0.1", stage=prod,
                                   host_key="ssh-ed25519 AAAA")
        self.record(host, status_with(D1))
        assert available(personas.team) == 0 and tallied() == counted()
        self.record(host, status_with(D1, cached=D2))  # the check found D2
        assert host.update_digest == D2 and available(personas.team, prod) == 1 and tallied() == counted()
        self.record(host, status_with(D1, cached=D2, staged=D2))  # staged: no longer "available"
        assert host.staged_digest == D2 and available(personas.team) == 0 and tallied() == counted()
        self.record(host, status_with(D2))  # booted it: nothing found any more
        assert not host.update_digest and available(personas.team) == 0 and tallied() == counted()

    def test_a_report_in_host_that_reports_an_update(self, personas):
        from tests.hosts.reportin_fixtures import Agent, make_token

        _, token = make_token(personas, pre_approved=True)
        agent = Agent()
        assert agent.enroll(token).status_code == 201
        assert agent.report(status_with(D1, cached=D2)).status_code == 200
        assert available(personas.team) == 1 and tallied() == counted()
        assert agent.report(status_with(D1)).status_code == 200  # a later check found nothing newer
        assert available(personas.team) == 0 and tallied() == counted()

    def test_hosts_made_moved_updated_in_bulk_and_deleted(self, personas):
        team, other = personas.team, personas.other_team
        canary = Stage.objects.create(team=team, name="canary", position=9)
        hosts = Host.objects.bulk_create([Host(team=team, name=f"h{i}", address="127.0.0.1", update_digest=D2,
                                               staged_digest=D2 if i == 0 else "") for i in range(4)])
        assert available(team) == 3 and tallied() == counted()
        services.host_update(host=hosts[1], actor=personas.admin, stage=canary)  # moves to another stage
        assert available(team, canary) == 1 and tallied() == counted()
        Host.objects.filter(pk=hosts[2].pk).update(staged_digest=D2)  # a bulk write, staged
        Host.objects.filter(pk=hosts[3].pk).update(update_digest="")  # a bulk write, found nothing
        assert available(team) == 1 and tallied() == counted()
        Host.objects.filter(pk=hosts[3].pk).update(team=other, update_digest=D1)  # another team's now
        assert available(team) == 1 and available(other) == 1 and tallied() == counted()
        services.tallies_compact()
        assert tallied() == counted()
        hosts[1].delete()
        canary.delete()
        assert available(team) == 0 and tallied() == counted()
        services.tallies_recount()
        assert available(other) == 1 and tallied() == counted()


def enforcing(team):
    return sum(tally_counts([team.pk], enforcing=True).values())


def test_the_tally_counts_hosts_that_enforce_signatures_through_polls_reports_and_bulk_writes(personas):
    """`enforcing`: the booted image's reference carries bootc's `containerPolicy` (pulled with
    --enforce-container-sigpolicy). It follows a poll, a report-in host and a bulk write."""
    from hosts.poller import PollOutcome, record_outcome
    from tests.hosts.reportin_fixtures import Agent, make_token

    host = Host.objects.create(team=personas.team, name="web-01", address="127.0.0.1", host_key="ssh-ed25519 AAAA")
    record_outcome(host, PollOutcome(host.pk, raw=status_with(D1), exit_status=0))
    assert enforcing(personas.team) == 0 and tallied() == counted()
    record_outcome(Host.objects.get(pk=host.pk), PollOutcome(host.pk, raw=status_with(D2, signature="containerPolicy"),
                                                             exit_status=0))
    assert Host.objects.get(pk=host.pk).booted_signature == "containerPolicy"
    assert enforcing(personas.team) == 1 and tallied() == counted()
    _, token = make_token(personas, pre_approved=True)
    agent = Agent()
    assert agent.enroll(token).status_code == 201
    assert agent.report(status_with(D1, signature="containerPolicy")).status_code == 200
    assert enforcing(personas.team) == 2 and tallied() == counted()
    Host.objects.filter(pk=host.pk).update(booted_signature="")  # a bulk write
    assert enforcing(personas.team) == 1 and tallied() == counted()
    services.tallies_recount()
    assert enforcing(personas.team) == 1 and tallied() == counted()
