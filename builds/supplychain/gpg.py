"""GnuPG, the one outside tool behind GPG signing keys: generating a pair, and a private key ring for one signing run.

skopeo signs with GPG keys through gpgme (`--sign-by FINGERPRINT`), "simple signing", which Debian's skopeo and podman
support; their sigstore signing and verification are patched out ("Debian-local change: sigstore disabled"). Every
call runs gpg in a key ring of its own (`--homedir`) in a private directory, with a deadline, and stops the gpg-agent
it started before the directory is removed.
"""

from __future__ import annotations

import os
import shutil
import subprocess  # nosec B404 - argument lists only, never a shell
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass

GPG_SECONDS = 60


class GpgFailed(Exception):
    """gpg failed; the message says what it was asked and what it answered."""


@dataclass(frozen=True)
class GpgKey:
    private_key: str  # armored, without a passphrase: the portal stores it encrypted (portal.crypto)
    public_key: str  # armored
    fingerprint: str


def _gpg(home: str, *args: str, stdin: bytes = b"") -> str:
    if shutil.which("gpg") is None:
        raise GpgFailed("gpg is not installed on this machine (Debian: apt-get install gnupg).")
    try:
        result = subprocess.run(["gpg", "--homedir", home, "--batch", "--no-tty", "--pinentry-mode", "loopback",  # nosec B603
                                 "--passphrase", "", *args], input=stdin, capture_output=True, timeout=GPG_SECONDS)
    except subprocess.TimeoutExpired:
        raise GpgFailed(f"gpg {args[0]} took longer than {GPG_SECONDS} s.") from None
    if result.returncode != 0:
        lines = [line for line in result.stderr.decode(errors="replace").splitlines() if line.strip()]
        raise GpgFailed(f"gpg {args[0]} failed: {lines[-1] if lines else f'exit status {result.returncode}'}")
    return result.stdout.decode(errors="replace")


@contextmanager
def key_ring(directory: str | None = None):
    """A fresh, private GNUPGHOME (inside `directory` when given); its agent is stopped and it is removed after."""
    home = tempfile.mkdtemp(prefix="gnupg-", dir=directory)
    os.chmod(home, 0o700)
    try:
        yield home
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], capture_output=True,  # nosec B603 B607
                       timeout=GPG_SECONDS, check=False)
        shutil.rmtree(home, ignore_errors=True)


def generate(user_id: str) -> GpgKey:
    """A new ed25519 signing key for `user_id` ("Team signing <team@portal>"), without expiry or passphrase."""
    with key_ring() as home:
        _gpg(home, "--quick-gen-key", user_id, "ed25519", "sign", "never")
        fingerprint = _fingerprint(_gpg(home, "--with-colons", "--list-secret-keys"))
        return GpgKey(private_key=_gpg(home, "--armor", "--export-secret-keys", fingerprint),
                      public_key=_gpg(home, "--armor", "--export", fingerprint), fingerprint=fingerprint)


def import_private_key(home: str, private_key: str) -> str:
    """Put an armored private key into the key ring `home`; returns its fingerprint."""
    _gpg(home, "--import", stdin=private_key.encode())
    return _fingerprint(_gpg(home, "--with-colons", "--list-secret-keys"))


def _fingerprint(colons: str) -> str:
    for line in colons.splitlines():
        if line.startswith("fpr:"):
            return line.split(":")[9]
    raise GpgFailed("gpg listed no key.")
