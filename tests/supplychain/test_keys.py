"""The portal's sigstore keys: cosign's encrypted format, made and read without cosign (skopeo signing with one is in
test_signing.py)."""

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.core.exceptions import ValidationError
from django.db import connection

from builds.supplychain import keys, services
from builds.supplychain.models import SigningKey
from portal.models import AuditEvent


def test_a_generated_private_key_is_a_cosign_encrypted_pem_with_scrypt_and_secretbox():
    pair = keys.generate("s3cret")
    lines = pair.private_pem.strip().splitlines()
    assert lines[0] == "-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----"
    assert lines[-1] == "-----END ENCRYPTED COSIGN PRIVATE KEY-----"
    envelope = json.loads(base64.b64decode("".join(lines[1:-1])))
    assert envelope["kdf"]["name"] == "scrypt" and envelope["kdf"]["params"] == {"N": 32768, "r": 8, "p": 1}
    assert envelope["cipher"]["name"] == "nacl/secretbox" and len(base64.b64decode(envelope["cipher"]["nonce"])) == 24
    assert serialization.load_pem_public_key(pair.public_pem.encode()).curve.name == "secp256r1"


def test_it_reads_back_what_it_wrote_and_derives_the_same_public_key():
    pair = keys.generate("s3cret")
    again = keys.load(pair.private_pem, "s3cret")
    assert again.public_pem == pair.public_pem and again.fingerprint == pair.fingerprint


def test_a_wrong_passphrase_is_refused_with_the_reason():
    pair = keys.generate("s3cret")
    with pytest.raises(keys.UnusableKey, match="Wrong passphrase"):
        keys.load(pair.private_pem, "not it")


@pytest.mark.parametrize("text, reason", [
    ("", "no PEM block"),
    ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "got PRIVATE KEY"),
    ("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n!!!!\n-----END ENCRYPTED COSIGN PRIVATE KEY-----\n", "not base64"),
    ("-----BEGIN ENCRYPTED COSIGN PRIVATE KEY-----\n" + base64.b64encode(b'{"kdf": 1}').decode()
     + "\n-----END ENCRYPTED COSIGN PRIVATE KEY-----\n", "not cosign's JSON envelope"),
])
def test_a_corrupt_key_is_refused_with_the_reason(text, reason):
    with pytest.raises(keys.UnusableKey, match=reason):
        keys.load(text, "s3cret")


def test_a_key_of_a_type_skopeo_does_not_sign_with_here_is_refused():
    der = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pem = keys._pem(keys.WRITTEN_PEM_TYPE, keys._seal(der, b"pw"))
    with pytest.raises(keys.UnusableKey, match="ECDSA"):
        keys.load(pem, "pw")


def test_an_imported_cosign_key_is_stored_encrypted_and_audited(personas):
    pair = keys.generate("from-cosign")
    key = services.signing_key_import(team=personas.team, user=personas.admin, name="release-2026",
                                      private_pem=pair.private_pem, passphrase="from-cosign")
    assert key.fingerprint == pair.fingerprint and key.imported
    with connection.cursor() as cursor:  # the columns as stored, not decrypted by the field
        cursor.execute(f"SELECT private_key, passphrase FROM {SigningKey._meta.db_table} WHERE id = %s", [key.pk])
        private_key, passphrase = cursor.fetchone()
    assert "COSIGN" not in private_key and passphrase != "from-cosign"  # encrypted at rest
    assert SigningKey.objects.get(pk=key.pk).passphrase == "from-cosign"
    assert AuditEvent.objects.filter(action="signing_key.import", object_id=str(key.pk)).exists()


def test_a_wrong_passphrase_on_import_stores_nothing(personas):
    pair = keys.generate("right")
    with pytest.raises(ValidationError, match="Wrong passphrase"):
        services.signing_key_import(team=personas.team, user=personas.admin, name="k", private_pem=pair.private_pem,
                                    passphrase="wrong")
    assert not SigningKey.objects.filter(team=personas.team).exists()


def test_only_team_admins_make_keys_and_names_are_unique_per_team(personas):
    from django.core.exceptions import PermissionDenied

    with pytest.raises(PermissionDenied):
        services.signing_key_generate(team=personas.team, user=personas.developer, name="dev-key")
    services.signing_key_generate(team=personas.team, user=personas.admin, name="release")
    with pytest.raises(ValidationError, match="already"):
        services.signing_key_generate(team=personas.team, user=personas.admin, name="release")
    with pytest.raises(ValidationError, match="lower-case"):
        services.signing_key_generate(team=personas.team, user=personas.admin, name="Release Key")
