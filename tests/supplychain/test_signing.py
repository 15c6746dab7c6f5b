"""Real signing and real verification: skopeo signs a pushed digest with a GPG key the portal generated, the
signature lands in the lookaside store, and a stage that requires the key takes the digest only when containers/image
verifies it under the policy.json the portal wrote. No check of the portal's own stands in for skopeo's.

Sigstore keys are made in cosign's format (test_keys.py), but Debian's skopeo has sigstore signing and verification
patched out; the test of a sigstore signing says so when that is the skopeo it finds."""

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from builds.supplychain import services, trust
from builds.supplychain.models import Signature
from builds.supplychain.signing import signature_execute, signature_tag
from portal.models import AuditEvent, RunStatus
from tests.releases.fixtures import stage_digest

pytestmark = [pytest.mark.slow]


def sign(promo, build, key, user=None):
    signature = services.signature_request(build=build, key=key, user=user or promo.personas.developer)
    signature_execute(signature.run_id)
    return Signature.objects.with_related().get(pk=signature.pk)


def require_key(promo, stage, key):
    services.stage_signing_policy_set(stage=promo.stages[stage], key=key, user=promo.personas.admin)


@pytest.fixture
def keys(promo):
    promo.push()
    team, admin = promo.team, promo.personas.admin
    return (services.signing_key_generate(team=team, user=admin, name="release"),
            services.signing_key_generate(team=team, user=admin, name="other"))


def test_skopeo_signs_with_a_gpg_key_the_portal_generated_into_the_lookaside_store(promo, keys, settings):
    # A work directory of this test's own, so that another worker's signing is not taken for a key ring left behind;
    # a short one, since gpg-agent's socket path in it must fit a socket address (108 bytes).
    work = Path(tempfile.mkdtemp(prefix="sig-"))
    settings.BUILD_WORK_DIR = str(work)
    release, _ = keys
    build = promo.builds[0]
    signature = sign(promo, build, release)
    assert signature.run.status == RunStatus.SUCCEEDED, signature.run.exit_reason
    assert signature.signed_at is not None and signature.digest == build.digest
    path = promo.repository.split("/", 1)[1]
    stored = Path(settings.SUPPLY_CHAIN_LOOKASIDE_DIR) / f"{path}@{build.digest.replace(':', '=')}" / "signature-1"
    assert stored.is_file() and stored.stat().st_size > 0
    assert stage_digest(f"{promo.repository}:build-1") == build.digest  # signing did not change the image
    assert AuditEvent.objects.filter(action="signature.created", object_id=str(signature.pk)).exists()
    assert not list(work.glob("imp-build-*/gnupg-*"))  # the key ring is gone
    shutil.rmtree(work)


def test_a_sigstore_key_signs_where_skopeo_has_sigstore_and_says_why_not_where_it_does_not(promo, keys):
    key = services.signing_key_generate(team=promo.team, user=promo.personas.admin, name="cosign", kind="sigstore")
    signature = sign(promo, promo.builds[0], key)
    if signature.run.status == RunStatus.FAILED and "sigstore disabled" in signature.run.exit_reason:
        # Debian's skopeo has sigstore patched out: what a team sees then is the reason, and the way out.
        assert "sign with a GPG key" in signature.run.exit_reason, signature.run.exit_reason
        assert signature.signed_at is None
        return
    assert signature.run.status == RunStatus.SUCCEEDED, signature.run.exit_reason
    attachment = subprocess.run(
        ["skopeo", "inspect", "--raw", "--tls-verify=false",
         f"docker://{promo.repository}:{signature_tag(promo.builds[0].digest)}"],
        capture_output=True, text=True, check=True).stdout
    assert [layer["mediaType"] for layer in json.loads(attachment)["layers"]] == [
        "application/vnd.dev.cosign.simplesigning.v1+json"]


def test_a_promotion_of_a_signed_digest_to_a_stage_that_requires_the_key_is_applied(promo, keys):
    release, _ = keys
    sign(promo, promo.builds[0], release)
    require_key(promo, "dev", release)
    promotion = promo.promote(promo.builds[0], "dev")
    assert promotion.status == "applied"
    assert stage_digest(promo.ref("dev")) == promo.builds[0].digest


def lose_signatures(promo, build, key=None):
    """The lookaside store loses what the portal recorded: every signature of `build`'s digest, or only `key`'s."""
    from django.conf import settings

    store = Path(trust.lookaside_path(settings.SUPPLY_CHAIN_LOOKASIDE_DIR, promo.repository, build.digest))
    for path in store.glob("signature-*"):
        if key is None or key.fingerprint[-16:].upper() in subprocess.run(
                ["gpg", "--list-packets"], input=path.read_bytes(), capture_output=True).stdout.decode().upper():
            path.unlink()


def test_an_unsigned_digest_is_refused_by_containers_image_and_the_tag_stays(promo, keys):
    release, _ = keys
    sign(promo, promo.builds[0], release)
    sign(promo, promo.builds[1], release)
    promo.promote(promo.builds[0], "dev")  # no requirement yet: dev holds build 1
    require_key(promo, "dev", release)
    lose_signatures(promo, promo.builds[1])  # the portal's records say signed; the store has nothing
    promotion = promo.promote(promo.builds[1], "dev", expect_applied=False)
    assert promotion.status == "failed"
    assert promotion.status_note.startswith(f"dev requires a signature with key release ({release.short_fingerprint})"), \
        promotion.status_note
    assert "containers/image refused this digest" in promotion.status_note
    assert "Source image rejected" in promotion.status_note  # skopeo's own words: it was skopeo that refused
    assert stage_digest(promo.ref("dev")) == promo.builds[0].digest


def test_a_digest_signed_with_another_key_is_refused_by_containers_image(promo, keys):
    release, other = keys
    sign(promo, promo.builds[2], release)
    wrong = sign(promo, promo.builds[2], other)
    assert wrong.signed_at is not None
    require_key(promo, "dev", release)
    lose_signatures(promo, promo.builds[2], key=release)  # only the other key's signature is left in the store
    promotion = promo.promote(promo.builds[2], "dev", expect_applied=False)
    assert promotion.status == "failed"
    assert "Source image rejected" in promotion.status_note
    assert "requires a signature with key release" in promotion.status_note


@pytest.mark.parametrize("how", ["unsigned", "other key", "retired key"])
def test_a_request_for_a_digest_without_the_signature_the_stage_takes_is_refused_with_the_reason(promo, keys, how):
    from builds.releases.models import Promotion

    release, other = keys
    build = promo.builds[1]
    if how == "other key":
        sign(promo, build, other)
    if how == "retired key":
        sign(promo, build, release)
        services.stage_signing_policy_set(stage=promo.stages["dev"], key=other, user=promo.personas.admin)
        services.signing_key_retire(key=release, user=promo.personas.admin)
        release, other = other, release  # dev requires the other key; the digest carries the retired one
    require_key(promo, "dev", release)
    with pytest.raises(ValidationError) as refused:
        promo.promote(build, "dev")
    reason = " ".join(refused.value.messages)
    assert reason.startswith(f"dev requires a signature with key {release} ({release.short_fingerprint})"), reason
    assert {"unsigned": f"{build.short_digest} is unsigned.",
            "other key": f"signed only with {other} ({other.short_fingerprint}), which dev does not accept.",
            "retired key": f"signed only with {other} ({other.short_fingerprint}), retired on "}[how] in reason
    assert not Promotion.objects.filter(digest=build.digest).exists()  # nothing stored


def test_a_stage_without_a_requirement_takes_unsigned_digests_as_before(promo, keys):
    promotion = promo.promote(promo.builds[0], "dev")
    assert promotion.status == "applied"


def test_a_retired_key_signs_nothing_more_and_a_stage_that_requires_it_keeps_it(promo, keys):
    release, other = keys
    require_key(promo, "dev", release)
    with pytest.raises(ValidationError, match="dev requires release"):
        services.signing_key_retire(key=release, user=promo.personas.admin)
    services.signing_key_retire(key=other, user=promo.personas.admin)
    other.refresh_from_db()
    with pytest.raises(ValidationError, match="retired"):
        services.signature_request(build=promo.builds[0], key=other, user=promo.personas.developer)


def test_a_digest_is_signed_once_per_key_and_only_by_developers_of_its_team(promo, keys):
    from django.core.exceptions import PermissionDenied

    release, _ = keys
    with pytest.raises(PermissionDenied):
        services.signature_request(build=promo.builds[0], key=release, user=promo.personas.viewer)
    sign(promo, promo.builds[0], release)
    with pytest.raises(ValidationError, match="signed with release already"):
        services.signature_request(build=promo.builds[0], key=release, user=promo.personas.developer)


def test_a_registry_that_does_not_answer_fails_the_signing_with_the_reason_and_nothing_is_recorded(promo, keys,
                                                                                                  egress_allow):
    from builds.models import Build
    from tests.helpers import free_port

    release, _ = keys
    build = promo.builds[0]
    address = f"127.0.0.1:{free_port()}"  # allowed, but nothing listens there
    egress_allow(address)
    Build.objects.filter(pk=build.pk).update(repository=f"{address}/platform/nowhere")
    build.refresh_from_db()
    signature = sign(promo, build, release)
    assert signature.run.status == RunStatus.FAILED
    assert signature.run.exit_reason.startswith(f"skopeo could not sign {build.short_digest}"), \
        signature.run.exit_reason
    assert signature.signed_at is None
    assert not AuditEvent.objects.filter(action="signature.created").exists()


def test_signing_into_a_registry_the_egress_policy_does_not_allow_is_refused_before_skopeo_runs(promo, keys):
    from builds.models import Build
    from tests.helpers import free_port

    release, _ = keys
    build = promo.builds[0]  # a loopback address the allow-list does not name: internal, so refused
    Build.objects.filter(pk=build.pk).update(repository=f"127.0.0.1:{free_port()}/platform/elsewhere")
    build.refresh_from_db()
    signature = sign(promo, build, release)
    assert signature.run.status == RunStatus.FAILED and signature.run.exit_reason.endswith("Nothing was signed.")


def test_a_key_that_signs_new_builds_signs_a_real_build_as_it_succeeds(personas, oci_registry, local_builder,
                                                                         build_settings, eager_tasks,
                                                                         django_capture_on_commit_callbacks):
    from builds import pipeline
    from builds import services as builds
    from builds.models import Build
    from tests.releases.fixtures import seed_containerfile

    key = services.signing_key_generate(team=personas.team, user=personas.admin, name="every-build")
    services.signing_key_sign_new_builds(key=key, user=personas.admin, on=True)
    definition = builds.definition_create(team=personas.team, user=personas.developer, name="signed-os")
    revision = builds.revision_create(definition=definition, user=personas.developer, message="first",
                                      containerfile=seed_containerfile({"version": "1.0", "packages": {"bash": "5.2-1"}}))
    build = builds.build_start(revision=revision, user=personas.developer)
    with django_capture_on_commit_callbacks(execute=True):
        pipeline.build_execute(build.pk)
    build = Build.objects.with_related().get(pk=build.pk)
    assert build.succeeded, build.run.exit_reason
    signature = Signature.objects.with_related().get(build=build)
    assert signature.key == key and signature.requested_by is None and signature.run.trigger == "system"
    assert signature.run.status == RunStatus.SUCCEEDED, signature.run.exit_reason
    assert signature.signed_at is not None


def host_pull(reference, files, tmp_path):
    """What containers/image on a host does with the trust files a stage hands out: skopeo reads the image under them.
    The host reads GPG signatures from the portal's /lookaside/; here the same store is read as a directory."""
    root = Path(tempfile.mkdtemp(dir=tmp_path))
    (root / "policy.json").write_text(files["policy.json"])
    (root / "registries.d").mkdir()
    (root / "registries.d" / "portal-signatures.yaml").write_text(files["portal-signatures.yaml"])
    return subprocess.run(["skopeo", "--policy", str(root / "policy.json"), "--registries.d", str(root / "registries.d"),
                           "copy", "--src-tls-verify=false", f"docker://{reference}", f"dir:{root / 'out'}"],
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_host_policy_verifies_like_the_promotion_passes_bootcs_guard_and_lets_other_images_through(
        promo, keys, settings, tmp_path):
    release, _ = keys
    sign(promo, promo.builds[0], release)
    require_key(promo, "prod", release)
    files = services.host_trust_files(stage=promo.stages["prod"])
    files["portal-signatures.yaml"] = trust.registries_d_yaml(
        [promo.repository.split("/", 1)[0]], lookaside=trust.lookaside_url(settings.SUPPLY_CHAIN_LOOKASIDE_DIR),
        staging=False)
    # bootc switch --enforce-container-sigpolicy refuses a policy whose global default accepts anything.
    assert not trust.default_is_insecure(files["policy.json"])
    assert trust.default_is_insecure(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))

    signed = host_pull(f"{promo.repository}@{promo.builds[0].digest}", files, tmp_path)
    assert signed.returncode == 0, signed.stderr
    unsigned = host_pull(f"{promo.repository}@{promo.builds[1].digest}", files, tmp_path)
    assert unsigned.returncode != 0 and "Source image rejected" in unsigned.stderr
    elsewhere = f"{promo.repository.split('/', 1)[0]}/tools/other:1"
    subprocess.run(["skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
                    f"docker://{promo.repository}@{promo.builds[1].digest}", f"docker://{elsewhere}"],
                   check=True, capture_output=True, timeout=60)
    other = host_pull(elsewhere, files, tmp_path)
    assert other.returncode == 0, other.stderr  # the docker transport's "" scope: other images pull as before
