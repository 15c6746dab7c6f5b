"""A signing key's page and its rotation, for anonymous, outsider, read-only and allowed users; and what they show.
The rotation's run is not executed here (test_rotation.py runs it with real skopeo)."""

import datetime

import pytest
from django.utils import timezone

from builds.supplychain import rotation, services
from builds.supplychain.models import KeyRotation, RotationStatus, StageSigningPolicy
from portal.models import RunStatus
from portal.services import run_finish, run_start


@pytest.fixture
def keys(personas):
    old = services.signing_key_generate(team=personas.team, user=personas.admin, name="release")
    new = services.signing_key_generate(team=personas.team, user=personas.admin, name="release-2027")
    return old, new


def a_stopped_rotation(personas, old, new):
    """A rotation whose run failed after one of two digests: what Resume is for."""
    started = rotation.key_rotation_start(old_key=old, new_key=new, user=personas.admin,
                                          old_until=timezone.now() + datetime.timedelta(days=7))
    run_start(started.run)
    run_finish(started.run, status=RunStatus.FAILED, reason="1 of 2 digest(s) in use could not be re-signed.")
    KeyRotation.objects.filter(pk=started.pk).update(digests_total=2, digests_done=1, digests_failed=1)
    return started


def rotate_form(new, days=14):
    return {"new_key": new.pk, "old_until": (timezone.now() + datetime.timedelta(days=days)).strftime("%Y-%m-%dT%H:%M")}


def test_anonymous_users_are_sent_to_log_in(keys, client_for, personas):
    old, new = keys
    stopped = a_stopped_rotation(personas, old, new)
    prod = personas.team.stages.get(name="prod")
    for response in (client_for(None).get(f"/signing-keys/{old.pk}/"),
                     client_for(None).post(f"/signing-keys/{old.pk}/rotate/", rotate_form(new)),
                     client_for(None).post(f"/key-rotations/{stopped.pk}/resume/"),
                     client_for(None).post(f"/stages/{prod.pk}/signing-policy/", {"entry": "1",
                                                                                 f"entry{prod.pk}-key": old.pk})):
        assert response.status_code == 302 and "/login/" in response["Location"]
    assert list(KeyRotation.objects.all()) == [stopped] and KeyRotation.objects.get().run_id == stopped.run_id
    assert not StageSigningPolicy.objects.filter(stage=prod).exists()


def test_an_outsider_finds_nothing_there(keys, client_for, personas):
    old, new = keys
    stopped = a_stopped_rotation(personas, old, new)
    outsider = client_for(personas.outsider)
    assert outsider.get(f"/signing-keys/{old.pk}/").status_code == 404
    assert outsider.post(f"/signing-keys/{old.pk}/rotate/", rotate_form(new)).status_code == 404
    assert outsider.post(f"/key-rotations/{stopped.pk}/resume/").status_code == 404


def test_a_viewer_reads_the_key_page_and_its_rotation_but_cannot_rotate_or_resume(keys, client_for, personas):
    old, new = keys
    stopped = a_stopped_rotation(personas, old, new)
    viewer = client_for(personas.viewer)
    page = viewer.get(f"/signing-keys/{old.pk}/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "1</strong> of 2 digests in use re-signed with release-2027" in text and "1 failed" in text
    assert "Resume" not in text and "Rotate release" not in text
    assert viewer.post(f"/key-rotations/{stopped.pk}/resume/").status_code == 403
    assert client_for(personas.developer).post(f"/signing-keys/{new.pk}/rotate/", rotate_form(old)).status_code == 403
    fragment = viewer.get(f"/signing-keys/{old.pk}/", headers={"HX-Request": "true", "HX-Target": "rotation-live"})
    assert fragment.status_code == 200 and 'id="rotation-card"' in fragment.content.decode()
    assert "<html" not in fragment.content.decode()


def test_a_team_admin_rotates_a_key_and_resumes_a_stopped_rotation(keys, client_for, personas,
                                                                   django_capture_on_commit_callbacks):
    old, new = keys
    admin = client_for(personas.admin)
    assert "Rotate release" in admin.get(f"/signing-keys/{old.pk}/").content.decode()
    with django_capture_on_commit_callbacks():  # queued, not run: the worker is another test's
        response = admin.post(f"/signing-keys/{old.pk}/rotate/", rotate_form(new))
    assert response.status_code == 302 and response["Location"] == f"/signing-keys/{old.pk}/"
    started = KeyRotation.objects.get(old_key=old)
    assert (started.new_key, started.status, started.run.status) == (new, RotationStatus.RESIGNING, RunStatus.QUEUED)
    again = admin.post(f"/signing-keys/{old.pk}/rotate/", rotate_form(new))
    assert again.status_code == 400 and "being rotated already" in again.content.decode()

    run_start(started.run)
    run_finish(started.run, status=RunStatus.CANCELLED, reason="Cancelled by teamadmin.")
    with django_capture_on_commit_callbacks():
        assert admin.post(f"/key-rotations/{started.pk}/resume/").status_code == 302
    resumed = KeyRotation.objects.select_related("run").get(pk=started.pk)
    assert resumed.run_id != started.run_id and resumed.run.status == RunStatus.QUEUED


def test_a_date_in_the_past_is_refused_with_the_reason(keys, client_for, personas):
    old, new = keys
    response = client_for(personas.admin).post(f"/signing-keys/{old.pk}/rotate/", rotate_form(new, days=-1))
    assert response.status_code == 400 and "must be in the future" in response.content.decode()


def test_a_stage_that_signs_what_enters_it_is_set_by_team_admins_only(keys, client_for, personas):
    old, _ = keys
    prod = personas.team.stages.get(name="prod")
    url = f"/stages/{prod.pk}/signing-policy/"
    data = {"entry": "1", f"entry{prod.pk}-key": old.pk}
    assert client_for(personas.outsider).post(url, data).status_code == 404
    assert client_for(personas.viewer).post(url, data).status_code == 403
    assert client_for(personas.developer).post(url, data).status_code == 403
    assert not StageSigningPolicy.objects.filter(stage=prod).exists()
    assert client_for(personas.admin).post(url, data).status_code == 302
    policy = StageSigningPolicy.objects.get(stage=prod)
    assert (policy.entry_key, policy.key) == (old, None)
    page = client_for(personas.viewer).get(f"/teams/{personas.team.slug}/signing-keys/").content.decode()
    assert "signs what enters it with <strong>release</strong>" in page


def test_policies_name_both_gpg_keys_only_in_the_overlap_and_one_sigstore_key_always(keys, personas):
    old, new = keys
    admin = personas.admin
    until = timezone.now() + datetime.timedelta(days=7)
    gpg = rotation.key_rotation_start(old_key=old, new_key=new, user=admin, old_until=until)
    assert rotation.verifying_keys(new) == [new]  # re-signing: no policy names the new key with the old one yet
    KeyRotation.objects.filter(pk=gpg.pk).update(status=RotationStatus.OVERLAP)
    assert rotation.verifying_keys(new) == [new, old]
    assert rotation.verifying_keys(new, now=until + datetime.timedelta(seconds=1)) == [new]  # the date came
    services.signing_key_retire(key=old, user=admin)  # retired early: it leaves the key ring at once
    assert rotation.verifying_keys(new) == [new]

    cosign_old = services.signing_key_generate(team=personas.team, user=admin, name="cosign-1", kind="sigstore")
    cosign_new = services.signing_key_generate(team=personas.team, user=admin, name="cosign-2", kind="sigstore")
    sigstore = rotation.key_rotation_start(old_key=cosign_old, new_key=cosign_new, user=admin, old_until=until)
    KeyRotation.objects.filter(pk=sigstore.pk).update(status=RotationStatus.OVERLAP)
    assert rotation.verifying_keys(cosign_new) == [cosign_new]  # sigstoreSigned takes exactly one key
