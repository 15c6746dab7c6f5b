"""Sigstore signing keys in the format skopeo and podman read (`--sign-by-sigstore-private-key`), made without cosign.

cosign is not packaged where the portal runs, and skopeo 1.9 has no `generate-sigstore-key`, so the portal writes the
pair itself. containers/image (signature/sigstore/copied.go) reads exactly what cosign writes:

- the private key: a PEM block of type "ENCRYPTED COSIGN PRIVATE KEY" whose body is the JSON envelope of go-tuf's
  `encrypted` package: the PKCS#8 DER of the key, sealed with NaCl secretbox (XSalsa20-Poly1305) under a key derived
  from the passphrase with scrypt (N=2^15, r=8, p=1: the "standard" parameters, which go-tuf accepts with the legacy
  N=2^16);
- the public key: a PEM "PUBLIC KEY" (SubjectPublicKeyInfo), what `policy.json`'s `sigstoreSigned` takes as
  `keyPath` or `keyData`.

The keys are ECDSA P-256, cosign's default. `tests/supplychain/test_signing.py` proves that skopeo signs with a pair made
here and that containers/image verifies what it signed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass

import nacl.exceptions
import nacl.secret
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

PRIVATE_PEM_TYPES = ("ENCRYPTED COSIGN PRIVATE KEY", "ENCRYPTED SIGSTORE PRIVATE KEY")
WRITTEN_PEM_TYPE = PRIVATE_PEM_TYPES[0]  # the one every containers/image version that signs with sigstore reads
SCRYPT_PARAMS = ({"N": 32768, "r": 8, "p": 1}, {"N": 65536, "r": 8, "p": 1})  # go-tuf's standard, then legacy
MAX_KEY_TEXT = 20_000


class UnusableKey(ValueError):
    """A key that cannot be used, with the reason people read."""


@dataclass(frozen=True)
class KeyPair:
    private_pem: str  # encrypted with `passphrase`
    public_pem: str
    passphrase: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_pem)


def fingerprint(public_pem: str) -> str:
    """SHA-256 of the public key's DER, in hex: how the pages and the audit trail name a key."""
    key = serialization.load_pem_public_key(public_pem.encode())
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def generate(passphrase: str | None = None) -> KeyPair:
    """A new ECDSA P-256 pair; the private half encrypted with `passphrase` (a random one when not given)."""
    passphrase = passphrase or secrets.token_urlsafe(32)
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return KeyPair(private_pem=_pem(WRITTEN_PEM_TYPE, _seal(der, passphrase.encode())), public_pem=public,
                   passphrase=passphrase)


def load(private_pem: str, passphrase: str) -> KeyPair:
    """Check an imported private key (cosign's or skopeo's format) and derive its public half. Raises `UnusableKey` with
    the reason for a corrupt key, a wrong passphrase or a key type skopeo does not sign with."""
    if len(private_pem) > MAX_KEY_TEXT:
        raise UnusableKey("That is not a signing key: it is far longer than one.")
    kind, body = _unpem(private_pem)
    if kind not in PRIVATE_PEM_TYPES:
        raise UnusableKey(f"Expected a cosign private key (a PEM block \"{WRITTEN_PEM_TYPE}\"), got "
                        f"{kind or 'no PEM block'}.")
    der = _open(body, passphrase.encode())
    try:
        key = serialization.load_der_private_key(der, password=None)
    except ValueError as exc:
        raise UnusableKey(f"The key decrypted, but what it holds is not a PKCS#8 private key ({exc}).") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise UnusableKey("The portal signs with ECDSA keys (cosign's default); this key is of another type.")
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    # Stored in the format the portal writes, so skopeo always gets what every version of it reads.
    return KeyPair(private_pem=_pem(WRITTEN_PEM_TYPE, _seal(der, passphrase.encode())), public_pem=public,
                   passphrase=passphrase)


def _seal(plaintext: bytes, passphrase: bytes) -> bytes:
    params = SCRYPT_PARAMS[0]
    salt = secrets.token_bytes(32)
    nonce = secrets.token_bytes(nacl.secret.SecretBox.NONCE_SIZE)
    box = nacl.secret.SecretBox(_derive(passphrase, salt, params))
    envelope = {
        "kdf": {"name": "scrypt", "params": params, "salt": _b64(salt)},
        "cipher": {"name": "nacl/secretbox", "nonce": _b64(nonce)},
        "ciphertext": _b64(box.encrypt(plaintext, nonce).ciphertext),
    }
    return json.dumps(envelope).encode()


def _open(body: bytes, passphrase: bytes) -> bytes:
    try:
        envelope = json.loads(body)
        kdf, cipher = envelope["kdf"], envelope["cipher"]
        params = {"N": kdf["params"]["N"], "r": kdf["params"]["r"], "p": kdf["params"]["p"]}
        salt, nonce = base64.b64decode(kdf["salt"]), base64.b64decode(cipher["nonce"])
        ciphertext = base64.b64decode(envelope["ciphertext"])
    except (ValueError, KeyError, TypeError) as exc:
        raise UnusableKey(f"The key's encrypted body is not cosign's JSON envelope ({exc}).") from None
    if kdf.get("name") != "scrypt" or cipher.get("name") != "nacl/secretbox" or params not in SCRYPT_PARAMS:
        raise UnusableKey("The key is encrypted in a way skopeo does not read (it takes scrypt N=32768 or 65536, r=8, "
                        "p=1, and nacl/secretbox).")
    if len(nonce) != nacl.secret.SecretBox.NONCE_SIZE:
        raise UnusableKey("The key's nonce has the wrong length: the key is corrupt.")
    try:
        return nacl.secret.SecretBox(_derive(passphrase, salt, params)).decrypt(ciphertext, nonce)
    except nacl.exceptions.CryptoError:
        raise UnusableKey("Wrong passphrase, or the key is corrupt: it does not decrypt.") from None


def _derive(passphrase: bytes, salt: bytes, params: dict) -> bytes:
    return Scrypt(salt=salt, length=nacl.secret.SecretBox.KEY_SIZE, n=params["N"], r=params["r"],
                  p=params["p"]).derive(passphrase)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pem(kind: str, body: bytes) -> str:
    text = base64.b64encode(body).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return f"-----BEGIN {kind}-----\n" + "\n".join(lines) + f"\n-----END {kind}-----\n"


def _unpem(text: str) -> tuple[str, bytes]:
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    if len(lines) < 3 or not lines[0].startswith("-----BEGIN ") or not lines[-1].startswith("-----END "):
        return "", b""
    kind = lines[0][len("-----BEGIN "):].rstrip("-")
    try:
        return kind, base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:
        raise UnusableKey("The PEM block's body is not base64: the key is corrupt.") from None


def public_key_refusal(public_pem: str) -> str:
    """Why `public_pem` is not a public key the portal can verify with, or ""."""
    try:
        key = serialization.load_pem_public_key(public_pem.encode())
    except (ValueError, TypeError) as exc:
        return f"That is not a PEM public key ({exc})."
    return "" if isinstance(key, ec.EllipticCurvePublicKey) else "Only ECDSA public keys are supported."
