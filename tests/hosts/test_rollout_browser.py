"""A rollout looked at in a real browser while it runs, with screenshots in test-artifacts/: mid-way (the canary done,
one host of it rolled back by greenboot, the next batch staged and waiting for its maintenance window) the page shows
the batches as coloured cells and the summary, and it moves on by itself as the rollout goes on, to the end."""

import threading
from datetime import UTC, datetime

import pytest
from django.db import connection

from builds.releases.models import Stage
from hosts import drift, poller
from hosts.rollouts import engine, services
from hosts.rollouts.models import RolloutHost, Step
from tests.browser import browser_page, log_in, screenshot
from tests.helpers import wait_for
from tests.hosts.fixtures import booted_state

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_rollout_page_follows_the_rollout_live(personas, portal_server, fleet, demo_images, host_settings):
    host_settings.ROLLOUTS_TICK_SECONDS = 0.1
    host_settings.ROLLOUTS_REBOOT_WAIT_SECONDS = 5
    host_settings.ROLLOUTS_PARK_AFTER_SECONDS = 10 ** 9  # the test's thread is the worker: it waits, it never parks
    digests, base = demo_images
    stage, _ = Stage.objects.get_or_create(team=personas.team, name="prod", defaults={"position": 2})
    names = [f"web-{i:02d}" for i in range(1, 9)]
    for name in names:
        fleet.add(name, booted_state(f"{base}:prod", digests["1.0"]["amd64"], "1.0"))
    hosts = fleet.start(stage=stage)
    poller.poll_hosts([h.pk for h in hosts.values()])
    drift.reference_digests_set(reference=f"{base}:prod", digests=digests["1.1"])
    services.policy_save(stage=stage, user=personas.admin, windows=[{"weekdays": [0], "starts": "02:00",
                                                                      "ends": "04:00"}],
                         fields={"canary_count": 3, "batch_count": 3, "max_failed_percent": 40, "soak_seconds": 1})
    fleet.fleet.set_fault("web-02", "fail_health_check", True)
    clock = {"now": datetime(2026, 12, 7, 2, 30, tzinfo=UTC)}  # Monday, inside the window
    rollout = services.rollout_start(stage=stage, reference=f"{base}:prod", digest=digests["1.1"]["amd64"],
                                     user=personas.operator)
    def execute():
        try:
            engine.rollout_execute(rollout.pk, clock=lambda: clock["now"])
        finally:
            connection.close()

    thread = threading.Thread(target=execute)
    thread.start()
    try:
        def canary_done():
            steps = dict(RolloutHost.objects.filter(rollout=rollout).values_list("host__name", "step"))
            return all(steps[n] in (Step.SOAKING, Step.UPDATED, Step.ROLLED_BACK) for n in names[:3])

        wait_for(canary_done, timeout=30, what="the canary rebooted")
        clock["now"] = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)  # the window closes: batch 1 stages and waits
        wait_for(lambda: RolloutHost.objects.filter(rollout=rollout, batch=1, step=Step.STAGED).count() == 3,
                 timeout=30, what="batch 1 staged")
        with browser_page() as page:
            log_in(page, portal_server.url, "operator")
            page.goto(portal_server.url + rollout.get_absolute_url())
            summary = page.locator("#rollout-summary")
            assert summary.inner_text() == "2/8 updated · 3 staging · 1 rolled back · 2 waiting"
            assert page.locator(".rollout-cell.step-rolled_back").first.inner_text() == "web-02"
            assert page.locator(".rollout-cells .step-staged").count() == 3
            assert page.locator("#rollout-controls button").count() == 3  # pause, abort, abort and roll back
            assert screenshot(page, "rollout-mid-way").stat().st_size > 10_000

            clock["now"] = datetime(2026, 12, 14, 2, 15, tzinfo=UTC)  # the next Monday's window: it goes on alone
            # No reload: the page follows by itself (the CSP forbids evaluating strings, so locators wait).
            page.locator("#rollout-summary", has_text="7/8 updated").wait_for(timeout=60_000)
            page.locator("#rollout-status", has_text="Completed").wait_for(timeout=30_000)
            text = page.locator("main").inner_text()
            assert "Completed: 7/8 hosts updated." in text
            assert page.locator("#rollout-controls").count() == 0  # nothing left to pause or abort
            assert "greenboot's health check failed" in text  # the rolled-back host, with its reason
            assert screenshot(page, "rollout-end").stat().st_size > 10_000
    finally:
        thread.join(60)


def test_the_switch_from_web_os_9_to_10_in_a_browser(personas, portal_server, fleet, demo_images, host_settings,
                                                      oci_registry):
    """The major upgrade: hosts of web-os 9 switched to web-os 10's stage tag (screenshots rollout-switch-mid-way.png,
    the canary switched and the next batch staged outside the window, and rollout-switch-end.png)."""
    from builds.models import ImageDefinition
    from hosts import simregistry

    host_settings.ROLLOUTS_TICK_SECONDS = 0.1
    host_settings.ROLLOUTS_REBOOT_WAIT_SECONDS = 5
    host_settings.ROLLOUTS_PARK_AFTER_SECONDS = 10 ** 9
    digests, base = demo_images
    ten = simregistry.push_demo_image(oci_registry.address, "platform/web-os-10", version="10.0", tags=["prod"])
    ImageDefinition.objects.create(team=personas.team, name="web-os-10",
                                   repository=f"{oci_registry.address}/platform/web-os-10")
    stage, _ = Stage.objects.get_or_create(team=personas.team, name="prod", defaults={"position": 2})
    names = [f"web-{i:02d}" for i in range(1, 5)]
    for name in names:
        fleet.add(name, booted_state(f"{base}:prod", digests["1.0"]["amd64"], "9.6"))
    hosts = fleet.start(stage=stage)
    poller.poll_hosts([h.pk for h in hosts.values()])
    services.policy_save(stage=stage, user=personas.admin, windows=[{"weekdays": [0], "starts": "02:00",
                                                                      "ends": "04:00"}],
                         fields={"canary_count": 1, "batch_count": 3, "max_failed_percent": 40, "soak_seconds": 1})
    clock = {"now": datetime(2026, 12, 7, 2, 30, tzinfo=UTC)}
    target = f"{oci_registry.address}/platform/web-os-10:prod"
    rollout = services.rollout_start(stage=stage, reference=target, digest=ten["amd64"], switch=True,
                                     user=personas.operator)

    def execute():
        try:
            engine.rollout_execute(rollout.pk, clock=lambda: clock["now"])
        finally:
            connection.close()

    thread = threading.Thread(target=execute)
    thread.start()
    try:
        wait_for(lambda: RolloutHost.objects.filter(rollout=rollout, batch=0,
                                                    step__in=[Step.SOAKING, Step.UPDATED]).exists(),
                 timeout=30, what="the canary switched")
        clock["now"] = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
        wait_for(lambda: RolloutHost.objects.filter(rollout=rollout, batch=1, step=Step.STAGED).count() == 3,
                 timeout=30, what="batch 1 staged")
        with browser_page() as page:
            log_in(page, portal_server.url, "operator")
            page.goto(portal_server.url + rollout.get_absolute_url())
            assert page.locator("#rollout-summary").inner_text() == "1/4 updated · 3 staging"
            assert "web-os-10" in page.locator("main").inner_text()
            screenshot(page, "rollout-switch-mid-way")
            clock["now"] = datetime(2026, 12, 14, 2, 15, tzinfo=UTC)
            page.locator("#rollout-status", has_text="Completed").wait_for(timeout=60_000)
            assert "4/4" in page.locator("#rollout-summary").inner_text()
            screenshot(page, "rollout-switch-end")
    finally:
        thread.join(60)
    assert {fleet.host(n).booted_digest for n in names} == {ten["amd64"]}
