"""Boot test pages: who may see and do what (anonymous, outsider, read-only, allowed), and the gate's refusals that need
no VM (an approver cannot sign off while the boot test runs; a stage without the policy asks for nothing).
The boots themselves are in test_boottests.py."""

import pytest

from builds.diskimages import services_boottests as boottests
from builds.diskimages.models import BootTest, BootTestPlan
from builds.releases import services as promotions
from builds.releases.models import PromotionStatus
from builds.releases.services import PromotionStateError
from portal.models import AuditEvent, Run, RunStatus
from tests.diskimages.rows import succeeded_build


@pytest.fixture
def build(personas):
    return succeeded_build(personas.team, personas.developer)


@pytest.fixture
def boot_test(build, personas):
    return boottests.boot_test_start(build=build, user=personas.developer)


def status_of(client_for, user, method, url, data=None):
    client = client_for(user)
    return (client.post(url, data or {}) if method == "post" else client.get(url)).status_code


@pytest.mark.parametrize("who, expected", [("anonymous", 302), ("outsider", 404), ("helpdesk", 404), ("viewer", 200),
                                           ("developer", 200)])
def test_a_boot_test_page_is_seen_by_the_team_only(client_for, personas, boot_test, who, expected):
    user = None if who == "anonymous" else getattr(personas, who)
    assert status_of(client_for, user, "get", boot_test.get_absolute_url()) == expected


@pytest.mark.parametrize("who, expected", [("anonymous", 302), ("outsider", 200), ("viewer", 200)])
def test_the_list_shows_only_the_teams_boot_tests(client_for, personas, boot_test, who, expected):
    user = None if who == "anonymous" else getattr(personas, who)
    response = client_for(user).get("/boot-tests/")
    assert response.status_code == expected
    if expected == 200:
        assert (boot_test.get_absolute_url() in response.content.decode()) == (who == "viewer")


@pytest.mark.parametrize("who, expected", [("anonymous", 302), ("outsider", 404), ("viewer", 403)])
def test_only_developers_start_and_cancel_boot_tests(client_for, personas, build, boot_test, who, expected):
    user = None if who == "anonymous" else getattr(personas, who)
    assert status_of(client_for, user, "post", "/boot-tests/new/", {"build": build.pk}) == expected
    assert status_of(client_for, user, "post", f"/runs/{boot_test.run_id}/cancel/") == expected
    assert status_of(client_for, user, "post", f"/runs/{boot_test.run_id}/retry/") == expected
    assert BootTest.objects.count() == 1 and boot_test.run.status == RunStatus.QUEUED


def test_a_developer_cancels_a_queued_boot_test_and_cannot_start_a_second_one_meanwhile(client_for, personas, build,
                                                                                        boot_test):
    client = client_for(personas.developer)
    response = client.post("/boot-tests/new/", {"build": build.pk}, follow=True)
    assert f"Boot test #{boot_test.pk} of {build.short_digest} is queued already" in response.content.decode()
    page = client.get(boot_test.get_absolute_url()).content.decode()
    assert f'action="/runs/{boot_test.run_id}/cancel/"' in page  # the page's Cancel button is the core's, as for every run
    response = client.post(f"/runs/{boot_test.run_id}/cancel/", {"next": boot_test.get_absolute_url()}, follow=True)
    assert response.status_code == 200
    assert Run.objects.get(pk=boot_test.run_id).status == RunStatus.CANCELLED
    response = client.post("/boot-tests/new/", {"build": build.pk})
    assert response.status_code == 302 and BootTest.objects.count() == 2


def test_run_again_is_the_cores_retry_and_boots_the_same_build_as_a_new_boot_test(client_for, personas, build,
                                                                                  boot_test):
    client = client_for(personas.developer)
    client.post(f"/runs/{boot_test.run_id}/cancel/")
    page = client.get(boot_test.get_absolute_url()).content.decode()
    assert f'action="/runs/{boot_test.run_id}/retry/"' in page and "Run again" in page
    response = client.post(f"/runs/{boot_test.run_id}/retry/", {"next": boot_test.get_absolute_url()})
    again = BootTest.objects.exclude(pk=boot_test.pk).get()
    assert response.status_code == 302 and response.url == again.get_absolute_url()
    assert again.build == build and again.run.status == RunStatus.QUEUED


def test_run_again_says_so_when_the_build_is_gone(client_for, personas, build, boot_test):
    client = client_for(personas.developer)
    client.post(f"/runs/{boot_test.run_id}/cancel/")
    BootTest.objects.filter(pk=boot_test.pk).update(build=None)
    response = client.post(f"/runs/{boot_test.run_id}/retry/", {"next": boot_test.get_absolute_url()}, follow=True)
    assert "The build this boot test booted is gone." in response.content.decode()
    assert BootTest.objects.count() == 1


def test_the_build_page_fragment_offers_a_boot_test_to_developers_only(client_for, personas, build, boot_test):
    url = f"/disk-images/digests/{build.digest}/"
    developer = client_for(personas.developer).get(url).content.decode()
    viewer = client_for(personas.viewer).get(url).content.decode()
    assert f"Boot test #{boot_test.pk}" in developer and f"Boot test #{boot_test.pk}" in viewer
    assert "Boot test it" in developer and "Boot test it" not in viewer
    assert f"Boot test #{boot_test.pk}" not in client_for(personas.outsider).get(url).content.decode()


def test_an_approver_cannot_sign_off_while_the_boot_test_runs(personas, build):
    test_stage = personas.team.stages.get(name="test")
    test_stage.require_boot_test, test_stage.require_previous_stage = True, False
    test_stage.save()
    promotion = promotions.promotion_request(definition=build.definition, build=build, target_stage=test_stage,
                                             user=personas.developer, reason="to test")
    assert promotion.status == PromotionStatus.PENDING
    boot_test = BootTest.objects.get(digest=build.digest)  # the request started it
    with pytest.raises(PromotionStateError, match=f"Boot test #{boot_test.pk} of .* is queued. It can be approved once"):
        promotions.promotion_approve(promotion=promotion, user=personas.approver, digest=promotion.digest)
    assert not promotion.approvals.exists()


def test_a_stage_without_the_policy_starts_no_boot_test(personas, build):
    promotion = promotions.promotion_request(definition=build.definition, build=build,
                                             target_stage=personas.team.stages.get(name="dev"),
                                             user=personas.developer, reason="to dev")
    assert promotion.status == PromotionStatus.APPLYING and not BootTest.objects.exists()


def test_the_approval_card_offers_no_approve_button_while_the_boot_test_has_no_verdict(client_for, personas, build):
    test_stage = personas.team.stages.get(name="test")
    test_stage.require_boot_test, test_stage.require_previous_stage = True, False
    test_stage.save()
    promotion = promotions.promotion_request(definition=build.definition, build=build, target_stage=test_stage,
                                             user=personas.developer, reason="to test")
    card = client_for(personas.approver).get(promotion.get_absolute_url()).content.decode()
    assert "is queued. It can be approved once that has passed." in card
    assert "Reject" in card and "promotion_approve" not in card and f"/promotions/{promotion.pk}/approve/" not in card


# --- A definition's boot-test plan -----------------------------------------------------------------------------------


def plan_url(definition):
    return f"/boot-tests/definitions/{definition.pk}/plan/"


PLAN = {"marker": r"ready: \d+ services", "boot_seconds": "90", "soak_seconds": "30", "ssh_checks": "on",
        "test_script": "curl -fsS http://localhost/health"}


@pytest.mark.parametrize("who, expected", [("anonymous", 302), ("outsider", 404), ("helpdesk", 404), ("viewer", 200),
                                           ("developer", 200)])
def test_a_definitions_boot_test_plan_is_seen_by_the_team_only(client_for, personas, build, who, expected):
    user = None if who == "anonymous" else getattr(personas, who)
    assert status_of(client_for, user, "get", plan_url(build.definition)) == expected


@pytest.mark.parametrize("who, expected", [("anonymous", 302), ("outsider", 404), ("helpdesk", 404), ("viewer", 403)])
def test_only_developers_change_the_plan(client_for, personas, build, who, expected):
    user = None if who == "anonymous" else getattr(personas, who)
    assert status_of(client_for, user, "post", plan_url(build.definition), PLAN) == expected
    assert not BootTestPlan.objects.exists()


def test_a_developer_sets_the_plan_and_the_next_boot_test_copies_it(client_for, personas, build):
    client = client_for(personas.developer)
    response = client.post(plan_url(build.definition), PLAN, follow=True)
    assert "is saved; it counts from the next boot test on" in response.content.decode()
    boot_test = boottests.boot_test_start(build=build, user=personas.developer)
    assert boot_test.marker == r"ready: \d+ services" and boot_test.boot_seconds_limit == 90
    assert boot_test.soak_seconds == 30 and boot_test.ssh_checks
    assert boot_test.test_script == "curl -fsS http://localhost/health"
    assert AuditEvent.objects.filter(action="boot_test.plan").exists()
    viewer = client_for(personas.viewer).get(plan_url(build.definition)).content.decode()
    assert "curl -fsS http://localhost/health" in viewer and "Save the plan" not in viewer


def test_without_a_plan_a_boot_test_takes_the_portals_settings(personas, build, settings):
    settings.BOOT_TEST_SOAK_SECONDS = 7
    boot_test = boottests.boot_test_start(build=build, user=personas.developer)
    assert boot_test.marker == settings.BOOT_TEST_MARKER and boot_test.soak_seconds == 7
    assert not boot_test.ssh_checks and boot_test.test_script == ""


@pytest.mark.parametrize("change, message", [
    ({"marker": "login: ("}, "This is not a regular expression"),
    ({"marker": r"(\w+\s?)+$"}, "This pattern repeats a repetition or overlapping alternatives"),
    ({"ssh_checks": ""}, "The script runs over SSH: turn on the checks over SSH to run it."),
])
def test_the_plan_form_says_what_is_wrong(client_for, personas, build, change, message):
    response = client_for(personas.developer).post(plan_url(build.definition), {**PLAN, **change})
    assert response.status_code == 200 and message in response.content.decode()
    assert not BootTestPlan.objects.exists()
