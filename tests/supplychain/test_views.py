"""Every supply chain page and action, for anonymous, outsider, read-only and allowed users; and what they show."""

import base64
import json

import pytest
import yaml
from django.core.files.uploadedfile import SimpleUploadedFile

from builds.supplychain import services
from builds.supplychain.models import Signature, SigningKey, StageSigningPolicy
from tests.supplychain.osv import feed_bytes


@pytest.fixture
def scene(promo, personas):
    key = services.signing_key_generate(team=personas.team, user=personas.admin, name="release")
    services.feed_import(name="debian", data=feed_bytes(), source="osv.json", user=personas.superuser)
    return {"key": key, "build": promo.builds[0], "stage": promo.stages["prod"], "team": personas.team}


def urls(scene):
    team, key, build, stage = scene["team"], scene["key"], scene["build"], scene["stage"]
    return {
        "keys": f"/teams/{team.slug}/signing-keys/",
        "key_public": f"/signing-keys/{key.pk}/public.pem",
        "build": f"/builds/{build.pk}/supply-chain/",
        "build_card": f"/builds/{build.pk}/supply-chain/card/",
        "sbom": f"/builds/{build.pk}/sbom.cdx.json",
        "stage_policy": f"/stages/{stage.pk}/signing-policy/",
        "advisory": "/advisories/CVE-2026-1001/",
    }


READ_PAGES = ["keys", "key_public", "build", "build_card", "sbom"]


@pytest.mark.parametrize("page", READ_PAGES + ["advisory"])
def test_anonymous_users_are_sent_to_log_in(scene, client_for, page):
    response = client_for(None).get(urls(scene)[page])
    assert response.status_code == 302 and "/login/" in response["Location"]


@pytest.mark.parametrize("page", READ_PAGES)
def test_an_outsider_finds_nothing_there(scene, client_for, personas, page):
    assert client_for(personas.outsider).get(urls(scene)[page]).status_code == 404


@pytest.mark.parametrize("page", READ_PAGES + ["advisory"])
def test_a_viewer_reads_every_page(scene, client_for, personas, page):
    assert client_for(personas.viewer).get(urls(scene)[page]).status_code == 200


def test_the_cve_page_shows_an_outsider_none_of_the_teams_images(scene, client_for, personas):
    text = client_for(personas.outsider).get(urls(scene)["advisory"]).content.decode()
    assert scene["build"].short_digest not in text and "No image you can see" in text
    assert scene["build"].short_digest in client_for(personas.viewer).get(urls(scene)["advisory"]).content.decode()


def test_the_public_key_downloads_armored_and_the_private_key_is_never_on_a_page(scene, client_for, personas):
    response = client_for(personas.viewer).get(urls(scene)["key_public"])
    assert response.content.decode() == scene["key"].public_key
    assert response.content.startswith(b"-----BEGIN PGP PUBLIC KEY BLOCK-----")
    assert 'filename="platform-release.asc"' in response["Content-Disposition"]
    page = client_for(personas.admin).get(urls(scene)["keys"]).content.decode()
    secret_lines = [line for line in scene["key"].private_key.splitlines() if len(line) > 40]
    assert secret_lines and not any(line in page for line in secret_lines)


def test_only_team_admins_generate_keys(scene, client_for, personas):
    url = f"/teams/{scene['team'].slug}/signing-keys/generate/"
    assert client_for(personas.outsider).post(url, {"name": "x", "kind": "gpg"}).status_code == 404
    assert client_for(personas.developer).post(url, {"name": "x", "kind": "gpg"}).status_code == 403
    assert client_for(personas.admin).post(url, {"name": "ci-2026", "kind": "gpg"}).status_code == 302
    assert SigningKey.objects.get(team=scene["team"], name="ci-2026").kind == "gpg"
    bad = client_for(personas.admin).post(url, {"name": "Bad Name", "kind": "gpg"})
    assert bad.status_code == 400 and "lower-case" in bad.content.decode()


def test_a_corrupt_imported_key_gets_a_clear_error_and_no_500(scene, client_for, personas):
    url = f"/teams/{scene['team'].slug}/signing-keys/import/"
    response = client_for(personas.admin).post(url, {"name": "imp", "private_key": "garbage", "passphrase": "x"})
    assert response.status_code == 400 and "Expected a cosign private key" in response.content.decode()
    assert not SigningKey.objects.filter(name="imp").exists()


def test_only_team_admins_say_what_a_stage_requires(scene, client_for, personas):
    url, data = urls(scene)["stage_policy"], {f"stage{scene['stage'].pk}-key": scene["key"].pk}
    assert client_for(None).post(url, data).status_code == 302
    assert client_for(personas.outsider).post(url, data).status_code == 404
    assert client_for(personas.developer).post(url, data).status_code == 403
    assert client_for(personas.admin).post(url, data).status_code == 302
    assert StageSigningPolicy.objects.get(stage=scene["stage"]).key == scene["key"]
    page = client_for(personas.viewer).get(urls(scene)["keys"]).content.decode()
    assert "a signature with <strong>release</strong>" in page


def test_only_developers_of_the_team_sign_and_retire_is_for_admins(scene, client_for, personas):
    url, data = f"/builds/{scene['build'].pk}/sign/", {"key": scene["key"].pk}
    assert client_for(personas.outsider).post(url, data).status_code == 404
    assert client_for(personas.viewer).post(url, data).status_code == 403
    assert not Signature.objects.exists()
    assert client_for(personas.developer).post(url, data).status_code == 302
    assert Signature.objects.filter(build=scene["build"], key=scene["key"]).count() == 1
    retire = f"/signing-keys/{scene['key'].pk}/retire/"
    assert client_for(personas.developer).post(retire).status_code == 403
    assert client_for(personas.outsider).post(retire).status_code == 404


def test_only_portal_administrators_import_feeds_from_the_page(scene, client_for, personas):
    def upload():
        return {"name": "debian", "file": SimpleUploadedFile("osv.json", feed_bytes(), "application/json")}

    assert client_for(None).post("/advisories/import/", upload()).status_code == 302
    assert client_for(personas.admin).post("/advisories/import/", upload()).status_code == 403
    assert client_for(personas.superuser).post("/advisories/import/", upload()).status_code == 302
    bad = client_for(personas.superuser).post("/advisories/import/", {"name": "debian", "file": SimpleUploadedFile(
        "x.json", b"nope", "application/json")}, follow=True)
    assert "Nothing was imported" in bad.content.decode()


def test_the_build_page_shows_vulnerabilities_by_severity_and_the_sbom_link(scene, client_for, personas):
    text = client_for(personas.viewer).get(urls(scene)["build"]).content.decode()
    assert "CVE-2026-1001" in text and "Critical 1" in text and "3.0.13-1" in text
    assert "sbom.cdx.json" in text and "Not signed." in text
    assert "Sign with" not in text  # a viewer may not sign
    assert "Sign with" in client_for(personas.developer).get(urls(scene)["build"]).content.decode()


def test_the_approval_card_fragment_says_what_the_stage_requires_and_the_cve_delta(scene, client_for, personas, promo):
    promo.push()
    promo.promote(promo.builds[0], "dev")
    promotion = promo.promote(promo.builds[1], "dev", apply=False)
    # The stage requires the key after the request (a request for an unsigned digest is refused from then on).
    services.stage_signing_policy_set(stage=promo.stages["dev"], key=scene["key"], user=personas.admin)
    url = f"/promotions/{promotion.pk}/trust/"
    assert client_for(None).get(url).status_code == 302
    assert client_for(personas.outsider).get(url).status_code == 404
    text = client_for(personas.viewer).get(url).content.decode()
    assert "requires a signature with <strong>release</strong>" in text and "will be refused" in text
    assert "New against what dev holds" in text and "CVE-2026-1002" in text and "CVE-2026-1003" in text
    assert "Fixed by this promotion" in text and "CVE-2026-1001" in text and "CVE-2026-1004" in text
    card = client_for(personas.viewer).get(promotion.get_absolute_url()).content.decode()
    assert url in card  # the card loads the fragment


def test_hosts_of_a_stage_that_requires_a_key_get_its_policy_json_and_registries_d(scene, client_for, personas, promo,
                                                                                     settings):
    stage = promo.stages["prod"]
    url = f"/stages/{stage.pk}/host-trust/policy.json"
    assert client_for(personas.viewer).get(url).status_code == 404  # nothing required yet
    services.stage_signing_policy_set(stage=stage, key=scene["key"], user=personas.admin)
    assert client_for(None).get(url).status_code == 302
    assert client_for(personas.outsider).get(url).status_code == 404
    policy = json.loads(client_for(personas.viewer).get(url).content)
    requirement = policy["transports"]["docker"][promo.repository][0]
    assert requirement["type"] == "signedBy" and requirement["keyType"] == "GPGKeys"
    assert base64.b64decode(requirement["keyData"]).decode() == scene["key"].public_key
    registries = client_for(personas.viewer).get(f"/stages/{stage.pk}/host-trust/portal-signatures.yaml").content
    assert yaml.safe_load(registries) == {"docker": {promo.registry.address: {
        "use-sigstore-attachments": True, "lookaside": f"{settings.SITE_URL}/lookaside"}}}
    page = client_for(personas.viewer).get(urls(scene)["keys"]).content.decode()
    assert "COPY policy.json /etc/containers/policy.json" in page


def test_hosts_read_gpg_signatures_from_the_lookaside_store_and_nothing_else(scene, client_for, settings, tmp_path):
    from pathlib import Path

    digest_dir = Path(settings.SUPPLY_CHAIN_LOOKASIDE_DIR) / "platform/web-os@sha256={}".format("a" * 64)
    digest_dir.mkdir(parents=True)
    (digest_dir / "signature-1").write_bytes(b"signed")
    (Path(settings.SUPPLY_CHAIN_LOOKASIDE_DIR) / "secret").write_text("no")
    anonymous = client_for(None)  # a host has no login
    response = anonymous.get("/lookaside/platform/web-os@sha256={}/signature-1".format("a" * 64))
    assert response.status_code == 200 and b"".join(response.streaming_content) == b"signed"
    assert anonymous.get("/lookaside/platform/web-os@sha256={}/signature-2".format("a" * 64)).status_code == 404
    assert anonymous.get("/lookaside/secret").status_code == 404
    assert anonymous.get("/lookaside/../lookaside/secret").status_code == 404
