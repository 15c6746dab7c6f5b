"""A key's rotation as a person sees it, in Chromium, on real data: three digests in use that the old key signed,
the rotation's run working in a worker thread with real skopeo, cancelled from its own page half-way, resumed, and
finished. Screenshots land in test-artifacts/ to be looked at; the assertions check what each must show."""

import datetime
import threading
import time

import pytest
from django.db import connection
from django.utils import timezone

from builds.supplychain import resigning, rotation, services
from builds.supplychain.models import KeyRotation, RotationStatus
from portal.models import Run, RunStatus
from portal.services import run_request_cancel
from tests.browser import browser_page, follow, log_in, screenshot, settle
from tests.supplychain.test_rotation import a_host
from tests.supplychain.test_signing import sign

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def in_a_worker(run_id):
    """The rotation task, as a worker runs it, in a thread of its own (with its own database connection)."""
    def work():
        try:
            resigning.key_rotation_execute(run_id)
        finally:
            connection.close()
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def wait_for(condition, seconds=60):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def scene(personas, promo, settings):
    settings.BUILD_CANCEL_POLL_SECONDS = 0.2
    promo.push()
    old = services.signing_key_generate(team=personas.team, user=personas.admin, name="release-2026")
    new = services.signing_key_generate(team=personas.team, user=personas.admin, name="release-2027")
    first, second, third = promo.builds
    for build in promo.builds:
        sign(promo, build, old)
    promo.promote(first, "dev")
    services.stage_signing_policy_set(stage=promo.stages["dev"], key=old, user=personas.admin)
    a_host(personas.team, "web-01", booted_digest=first.digest, rollback_digest=second.digest)
    a_host(personas.team, "web-02", booted_digest=third.digest)
    return old, new


def test_a_key_rotation_cancelled_half_way_resumed_and_finished_in_a_browser(personas, portal_server, scene,
                                                                             monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM reads next to Playwright's event loop
    old, new = scene
    started = rotation.key_rotation_start(old_key=old, new_key=new, user=personas.admin,
                                          old_until=timezone.now() + datetime.timedelta(days=14))
    worker = in_a_worker(started.run_id)
    assert wait_for(lambda: KeyRotation.objects.get(pk=started.pk).digests_done >= 1)
    run_request_cancel(run=Run.objects.get(pk=started.run_id), user=personas.admin)  # what the run's Cancel does
    worker.join(60)
    stopped = KeyRotation.objects.select_related("run").get(pk=started.pk)
    assert stopped.run.status == RunStatus.CANCELLED, stopped.run.exit_reason
    assert stopped.status == RotationStatus.RESIGNING and 1 <= stopped.digests_done < 3
    with browser_page() as page:
        log_in(page, portal_server.url, "teamadmin")
        page.goto(f"{portal_server.url}/signing-keys/{old.pk}/")
        settle(page)
        card = page.locator("#rotation-card").inner_text()
        assert "Re-signing the digests in use" in card and "of 3 digests in use re-signed with release-2027" in card
        assert "The run stopped: Cancelled by teamadmin" in card
        screenshot(page, "supplychain-rotation-stopped")

        follow(page, page.locator("#rotation-card button", has_text="Resume").click)  # the real button: a new run, queued
        resumed = KeyRotation.objects.select_related("run").get(pk=started.pk)
        assert resumed.run_id != started.run_id and resumed.run.status == RunStatus.QUEUED
        card = page.locator("#rotation-card").inner_text()
        assert "Queued" in card and "Cancel" in card and "Re-signing the digests in use" in card
        screenshot(page, "supplychain-rotation-resumed")

        in_a_worker(resumed.run_id).join(120)  # a worker takes the queued run
        done = KeyRotation.objects.select_related("run").get(pk=started.pk)
        assert done.run.status == RunStatus.SUCCEEDED, done.run.exit_reason
        assert (done.status, done.digests_done, done.digests_total) == (RotationStatus.OVERLAP, 3, 3)
        page.goto(f"{portal_server.url}/signing-keys/{old.pk}/")
        settle(page)
        card = page.locator("#rotation-card").inner_text()
        assert "both keys verify until the date" in card and "3 of 3 digests in use re-signed" in card
        assert "policies accept both keys meanwhile" in card
        assert "re-signed already" in page.locator("#log-card").inner_text()  # the resumed run skipped them
        screenshot(page, "supplychain-rotation-overlap")

        page.goto(f"{portal_server.url}/teams/{personas.team.slug}/signing-keys/")
        settle(page)
        assert "rotating to release-2027" in page.inner_text("body")
        assert "a signature with release-2027" in page.locator("#stage-dev").inner_text()
        screenshot(page, "supplychain-keys-rotating")


def test_a_stage_that_signs_what_enters_it_on_the_keys_page_and_the_approval_card(personas, promo, portal_server,
                                                                                    monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    promo.push()
    admin = personas.admin
    release = services.signing_key_generate(team=personas.team, user=admin, name="release")
    prod_key = services.signing_key_generate(team=personas.team, user=admin, name="prod-2026")
    first = promo.builds[0]
    sign(promo, first, release)
    services.stage_signing_policy_set(stage=promo.stages["prod"], key=release, user=admin)
    services.stage_signing_policy_set(stage=promo.stages["prod"], key=prod_key, user=admin, entry=True)
    promo.promote(first, "dev")
    promo.promote(first, "test", approvers=[personas.approver])
    waiting = promo.promote(first, "prod", approvers=(), apply=False)
    with browser_page() as page:
        log_in(page, portal_server.url, "teamadmin")
        page.goto(f"{portal_server.url}/teams/{personas.team.slug}/signing-keys/")
        settle(page)
        assert "signs what enters it with prod-2026" in page.locator("#stage-prod").inner_text()
        screenshot(page, "supplychain-keys-stage-key")
        page.goto(portal_server.url + waiting.get_absolute_url())
        page.wait_for_selector("#promotion-entry-key")
        trust = page.locator("#promotion-trust").inner_text()
        assert "prod signs what enters it: the copy signs" in trust and "prod-2026" in trust
        assert "prod requires a signature with release: this digest has one" in trust
        screenshot(page, "supplychain-approval-card-stage-key")
