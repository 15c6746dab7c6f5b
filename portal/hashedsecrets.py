"""Secrets shown once and stored only as their SHA-256: the REST API's tokens (`portal.AccessToken`), the first JSON
API's tokens (`builds.ApiToken`), hosts' enrollment tokens and their agents' credentials (`hosts`). A prefix names the
kind, so a leaked secret can be recognised and a lookup refuses the wrong kind at once. SHA-256 without a salt is
enough: the secrets are 32 random bytes, not passwords, and the hash must be found by an index lookup."""

import hashlib
import secrets


def new_secret(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class HashedSecret:
    """For a model whose rows hold one such secret's `token_hash`: its PREFIX, `generate()` and `hash_secret()`."""

    PREFIX = ""

    @classmethod
    def generate(cls) -> str:
        return new_secret(cls.PREFIX)

    @staticmethod
    def hash_secret(secret: str) -> str:
        return secret_hash(secret)
