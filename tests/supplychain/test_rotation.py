"""Key rotation with real skopeo under real policy.json files: every digest in use that the old key signed is
re-signed with the new key by the rotation's run; during the overlap the stage's verification policy and the host
policy accept both GPG keys; at the date the old key leaves them, so a digest only the old key signed is refused by
containers/image, and the re-signed ones verify with the new key alone."""

import base64
import datetime
import json

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from builds.models import Build
from builds.supplychain import resigning, rotation, services, trust
from builds.supplychain.models import KeyRotation, RotationStatus, Signature, StageSigningPolicy
from hosts.models import Host, HostState
from portal.models import AuditEvent, RunStatus
from tests.supplychain.test_signing import host_pull, sign

pytestmark = [pytest.mark.slow]


def host_files(promo, stage, settings):
    """The stage's host files, with GPG signatures read from the workers' lookaside directory (a host reads the same
    files from the portal's /lookaside/)."""
    files = services.host_trust_files(stage=promo.stages[stage])
    files["portal-signatures.yaml"] = trust.registries_d_yaml(
        [promo.repository.split("/", 1)[0]], lookaside=trust.lookaside_url(settings.SUPPLY_CHAIN_LOOKASIDE_DIR),
        staging=False)
    return files


def named_keys(files, promo):
    """The armored keys the host policy's requirement for the repository holds (keyData: a key ring)."""
    requirement = json.loads(files["policy.json"])["transports"]["docker"][promo.repository]
    assert [r["type"] for r in requirement] == ["signedBy"]
    return base64.b64decode(requirement[0]["keyData"]).decode()


def pulls(promo, build, files, tmp_path):
    return host_pull(f"{promo.repository}@{build.digest}", files, tmp_path)


def a_host(team, name, **digests):
    return Host.objects.create(team=team, name=name, address="127.0.0.1", port=1, host_key="ssh-ed25519 AAAA",
                               state=HostState.UP_TO_DATE, is_bootc=True, status_at=timezone.now(), **digests)


def rotate(promo, old, new, *, days=7):
    started = rotation.key_rotation_start(old_key=old, new_key=new, user=promo.personas.admin,
                                          old_until=timezone.now() + datetime.timedelta(days=days))
    resigning.key_rotation_execute(started.run_id)
    return KeyRotation.objects.select_related("run", "old_key", "new_key").get(pk=started.pk)


def the_date_comes(rotation_row):
    """The date given for the old key passes (the clock, moved on by the row rather than by waiting a week)."""
    KeyRotation.objects.filter(pk=rotation_row.pk).update(old_until=timezone.now() - datetime.timedelta(seconds=1))


@pytest.fixture
def scene(promo):
    """release signed builds 1, 2 and 3; dev holds build 1 and requires release; a host keeps build 2 for rollback;
    build 3 is in use nowhere."""
    promo.push()
    admin = promo.personas.admin
    old = services.signing_key_generate(team=promo.team, user=admin, name="release")
    new = services.signing_key_generate(team=promo.team, user=admin, name="release-2027")
    for build in promo.builds:
        sign(promo, build, old)
    promo.promote(promo.builds[0], "dev")
    services.stage_signing_policy_set(stage=promo.stages["dev"], key=old, user=admin)
    a_host(promo.team, "web-01", booted_digest=promo.builds[0].digest, rollback_digest=promo.builds[1].digest)
    return old, new


def test_a_rotated_key_still_verifies_old_signatures_until_the_date_it_was_given(promo, scene, settings, tmp_path):
    old, new = scene
    first, second, third = promo.builds
    before = host_files(promo, "dev", settings)
    assert pulls(promo, third, before, tmp_path).returncode == 0  # release signed it

    done = rotate(promo, old, new)
    assert done.run.status == RunStatus.SUCCEEDED, done.run.exit_reason
    assert (done.status, done.digests_total, done.digests_done, done.digests_failed) == (RotationStatus.OVERLAP, 2, 2, 0)
    resigned = set(Signature.objects.valid().filter(key=new).values_list("digest", flat=True))
    assert resigned == {first.digest, second.digest}  # in use: dev holds 1, web-01 keeps 2; 3 is in use nowhere
    assert StageSigningPolicy.objects.get(stage=promo.stages["dev"]).key == new

    # The overlap: the host policy names both keys. The old key's signature of build 3 still verifies, and so does
    # build 1 (signed by both).
    overlap = host_files(promo, "dev", settings)
    assert pulls(promo, third, overlap, tmp_path).returncode == 0
    assert pulls(promo, first, overlap, tmp_path).returncode == 0
    assert named_keys(overlap, promo) == old.public_key + new.public_key or \
        named_keys(overlap, promo) == new.public_key + old.public_key
    # The promotion's copy follows the rotation too: build 3, signed by the old key only, enters dev.
    assert promo.promote(third, "dev").status == "applied"
    promo.promote(first, "dev", reason="back to 1", confirm="dev")

    the_date_comes(done)
    after = host_files(promo, "dev", settings)
    assert named_keys(after, promo) == new.public_key
    refused = pulls(promo, third, after, tmp_path)
    assert refused.returncode != 0 and "Source image rejected" in refused.stderr, refused.stderr
    for build in (first, second):  # re-signed: they verify with the new key alone
        verified = pulls(promo, build, after, tmp_path)
        assert verified.returncode == 0, verified.stderr
    # ... and the stage takes build 3 no more: its request is refused naming the key it lacks.
    with pytest.raises(ValidationError) as refused_request:
        promo.promote(third, "dev", reason="again")
    assert f"signed only with release ({old.short_fingerprint}), which dev does not accept" in " ".join(
        refused_request.value.messages)

    retired = resigning.key_rotations_retire_due()
    assert [r.pk for r in retired] == [done.pk]
    old.refresh_from_db()
    assert old.retired_at is not None and not old.signs_new_builds
    actions = list(AuditEvent.objects.filter(action__startswith="signing_key.rotation").values_list("action", flat=True))
    assert actions == ["signing_key.rotation.start", "signing_key.rotation.resigned", "signing_key.rotation.retired"] \
        or sorted(actions) == sorted(["signing_key.rotation.start", "signing_key.rotation.resigned",
                                      "signing_key.rotation.retired"])
    assert AuditEvent.objects.filter(action="signature.created", detail__rotation=done.pk).count() == 2


def test_a_digest_that_cannot_be_re_signed_is_named_and_the_old_key_stays_until_a_resumed_run_signs_it(
        promo, scene, settings, egress_allow):
    from tests.helpers import free_port

    old, new = scene
    second = promo.builds[1]
    address = f"127.0.0.1:{free_port()}"  # allowed, but nothing listens there
    egress_allow(address)
    Build.objects.filter(pk=second.pk).update(repository=f"{address}/platform/nowhere")
    stopped = rotate(promo, old, new)
    assert stopped.run.status == RunStatus.FAILED
    assert stopped.run.exit_reason.startswith("1 of 2 digest(s) in use could not be re-signed with release-2027: "
                                              f"{second.short_digest} (")
    assert "release stays in every policy" in stopped.run.exit_reason
    assert (stopped.status, stopped.digests_done, stopped.digests_failed) == (RotationStatus.RESIGNING, 1, 1)
    assert StageSigningPolicy.objects.get(stage=promo.stages["dev"]).key == old
    assert rotation.verifying_keys(old) == [old]
    with pytest.raises(ValidationError, match="being rotated away"):
        services.stage_signing_policy_set(stage=promo.stages["test"], key=old, user=promo.personas.admin)

    Build.objects.filter(pk=second.pk).update(repository=promo.repository)
    resumed = rotation.key_rotation_resume(rotation=stopped, user=promo.personas.admin)
    assert resumed.run_id != stopped.run_id
    resigning.key_rotation_execute(resumed.run_id)
    resumed = KeyRotation.objects.select_related("run").get(pk=stopped.pk)
    assert resumed.run.status == RunStatus.SUCCEEDED, resumed.run.exit_reason
    assert (resumed.status, resumed.digests_done, resumed.digests_failed) == (RotationStatus.OVERLAP, 2, 0)
    assert Signature.objects.valid().filter(key=new).count() == 2  # the first digest was not signed twice
    assert StageSigningPolicy.objects.get(stage=promo.stages["dev"]).key == new


def test_a_rotation_is_refused_to_another_kind_a_past_date_or_twice(promo, scene):
    old, new = scene
    admin = promo.personas.admin
    cosign = services.signing_key_generate(team=promo.team, user=admin, name="cosign", kind="sigstore")
    soon = timezone.now() + datetime.timedelta(days=1)
    with pytest.raises(ValidationError, match="same kind"):
        rotation.key_rotation_start(old_key=old, new_key=cosign, old_until=soon, user=admin)
    with pytest.raises(ValidationError, match="in the future"):
        rotation.key_rotation_start(old_key=old, new_key=new, old_until=timezone.now(), user=admin)
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        rotation.key_rotation_start(old_key=old, new_key=new, old_until=soon, user=promo.personas.developer)
    rotation.key_rotation_start(old_key=old, new_key=new, old_until=soon, user=admin)
    with pytest.raises(ValidationError, match="being rotated already"):
        rotation.key_rotation_start(old_key=old, new_key=new, old_until=soon, user=admin)
