"""Secrets in the database are encrypted at rest and survive a key rotation."""

from cryptography.fernet import Fernet

from portal import crypto


def test_encrypted_text_round_trips_and_is_not_plain(settings):
    token = crypto.encrypt("hunter2")
    assert "hunter2" not in token
    assert crypto.decrypt(token) == "hunter2"


def test_old_keys_still_decrypt_after_rotation(settings):
    old = crypto.encrypt("registry password")
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *settings.FIELD_ENCRYPTION_KEYS]
    assert crypto.decrypt(old) == "registry password"
    new = crypto.encrypt("registry password")
    settings.FIELD_ENCRYPTION_KEYS = settings.FIELD_ENCRYPTION_KEYS[:1]
    assert crypto.decrypt(new) == "registry password"


def test_a_secret_from_an_unknown_key_is_reported_not_crashed(settings):
    token = crypto.encrypt("x")
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode()]
    try:
        crypto.decrypt(token)
    except crypto.SecretUnreadable as exc:
        assert "no longer has" in str(exc)
    else:
        raise AssertionError("expected SecretUnreadable")
