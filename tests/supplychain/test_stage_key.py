"""A stage that signs what enters it ("prod signs what enters prod"): the promotion's copy signs the digest with the
stage's own key as skopeo writes the stage tag, after containers/image verified the key the stage requires. Real
skopeo, real GPG, real policy.json: the host policy of the stage names the stage key, and a digest the stage key never
signed is refused by it."""

import pytest

from builds.supplychain import services
from builds.supplychain.models import Signature
from portal.models import AuditEvent
from tests.supplychain.test_rotation import host_files, pulls
from tests.supplychain.test_signing import sign

pytestmark = [pytest.mark.slow]


def test_prod_signs_what_enters_prod_with_its_own_key_and_its_hosts_verify_that_key(promo, settings, tmp_path):
    personas = promo.push().personas
    admin = personas.admin
    release = services.signing_key_generate(team=promo.team, user=admin, name="release")
    prod_key = services.signing_key_generate(team=promo.team, user=admin, name="prod")
    first, second, _ = promo.builds
    sign(promo, first, release)
    sign(promo, second, release)
    services.stage_signing_policy_set(stage=promo.stages["prod"], key=release, user=admin)
    services.stage_signing_policy_set(stage=promo.stages["prod"], key=prod_key, user=admin, entry=True)
    for build in (first, second):
        promo.promote(build, "dev")
        promo.promote(build, "test", approvers=[personas.approver])
    assert not Signature.objects.filter(key=prod_key).exists()  # nothing signed with it before prod

    promotion = promo.promote(first, "prod", approvers=[personas.approver, personas.approver2])
    signature = Signature.objects.valid().get(key=prod_key)
    assert (signature.digest, signature.run_id) == (first.digest, promotion.run_id)  # signed in the promotion's copy
    assert AuditEvent.objects.filter(action="signature.created", detail__promotion=promotion.pk).exists()

    files = host_files(promo, "prod", settings)
    assert services.stage_signature_requirement(stage=promo.stages["prod"]).startswith(
        "prod signs what enters it with key prod")
    entered = pulls(promo, first, files, tmp_path)
    assert entered.returncode == 0, entered.stderr
    never_entered = pulls(promo, second, files, tmp_path)  # release signed it, prod did not: hosts of prod refuse it
    assert never_entered.returncode != 0 and "Source image rejected" in never_entered.stderr


def test_a_stage_key_does_not_sign_a_digest_containers_image_refuses(promo):
    from tests.supplychain.test_signing import lose_signatures

    personas = promo.push().personas
    admin = personas.admin
    release = services.signing_key_generate(team=promo.team, user=admin, name="release")
    dev_key = services.signing_key_generate(team=promo.team, user=admin, name="dev-entry")
    sign(promo, promo.builds[0], release)
    services.stage_signing_policy_set(stage=promo.stages["dev"], key=release, user=admin)
    services.stage_signing_policy_set(stage=promo.stages["dev"], key=dev_key, user=admin, entry=True)
    lose_signatures(promo, promo.builds[0])  # the portal's records say signed; the store has nothing
    refused = promo.promote(promo.builds[0], "dev", expect_applied=False)
    assert refused.status == "failed" and "Source image rejected" in refused.status_note
    assert refused.status_note.startswith(f"dev requires a signature with key release ({release.short_fingerprint})")
    assert not Signature.objects.filter(key=dev_key).exists()
