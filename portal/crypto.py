"""Encryption of secrets stored in the database (registry passwords, SSH private keys, webhook secrets).

Fernet with key rotation: FIELD_ENCRYPTION_KEYS lists keys newest first; the first encrypts, all decrypt. To rotate, put a
new key in front, restart, and re-save the rows (`manage.py rotate_secrets`).
"""

import hashlib
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django import forms
from django.conf import settings
from django.db import models


class SecretUnreadable(Exception):
    """A stored secret cannot be decrypted with any configured key."""


@lru_cache(maxsize=4)
def _fernet(keys):
    return MultiFernet([Fernet(key.encode() if isinstance(key, str) else key) for key in keys])


def fernet():
    return _fernet(tuple(settings.FIELD_ENCRYPTION_KEYS))


def key_fingerprint(key: str) -> str:
    """A short name for a key that gives nothing of it away: the first 16 hex digits of SHA-256 over the key, as
    `manage.py backup` records it and `manage.py restore` compares it."""
    return hashlib.sha256(b"portal-field-encryption-key:" + key.encode()).hexdigest()[:16]


def key_fingerprints() -> list[str]:
    """The fingerprints of FIELD_ENCRYPTION_KEYS, newest (the one that encrypts) first."""
    return [key_fingerprint(key) for key in settings.FIELD_ENCRYPTION_KEYS]


def encrypt(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("This secret was encrypted with a key the portal no longer has.") from None


class EncryptedTextField(models.TextField):
    """A text column stored encrypted; reads give back plain text. Never shown in forms, admin lists or logs by default."""

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(value)

    def formfield(self, **kwargs):
        kwargs.setdefault("widget", forms.PasswordInput(render_value=False))
        return super().formfield(**kwargs)
