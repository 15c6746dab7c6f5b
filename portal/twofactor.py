"""The second factor (django-otp): an authenticator app (TOTP) per user, with single-use backup codes for the day the
phone is lost. What it reads and draws; the state changes are `portal.services.two_factor_*`.

- A user may set one up on their two-factor page; from then on, signing in asks for a code after the password.
- A team may require it (`Team.require_two_factor`): its approvers and admins are asked to set one up, and approving or
  administering there is refused without a sign-in verified with it (`portal.access.second_factor_refusal`).
- A lost phone: a backup code signs in once each (ten are shown when the app is set up, and can be renewed); an admin
  with shell access runs `manage.py two_factor_reset USERNAME`; a superuser may delete the devices in the admin site.
"""

import secrets
import time
from base64 import b32encode

import segno
from django.utils.safestring import mark_safe
from django_otp import devices_for_user
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from .models import Membership, Role

BACKUP_CODES = 10
# Roles a team's second-factor requirement applies to: the ones that can approve or administer.
ROLES_THAT_NEED_IT = (Role.APPROVER, Role.ADMIN)


def new_secret():
    """A fresh TOTP secret, as the hex text TOTPDevice.key holds (20 random bytes, as RFC 4226 recommends)."""
    return secrets.token_hex(20)


def secret_for_people(key_hex):
    """The secret as authenticator apps take it when typed: base32, in groups of four."""
    text = b32encode(bytes.fromhex(key_hex)).decode()
    return " ".join(text[i:i + 4] for i in range(0, len(text), 4))


def provisioning_uri(user, key_hex):
    """The otpauth:// URI an authenticator app reads from the QR code (issuer OTP_TOTP_ISSUER, label the username)."""
    return TOTPDevice(user=user, key=key_hex).config_url


def qr_svg(uri):
    """The URI as a QR code: an inline SVG drawn on the server (no image service, no script), safe to put in a page."""
    svg = segno.make(uri, error="m").svg_inline(scale=4, border=2, dark="#000", light="#fff", svgclass="qr-code",
                                                title="QR code for your authenticator app")
    # Reviewed: segno writes fixed markup, our constant title and path data; the URI is only in the modules' geometry.
    return mark_safe(svg)  # nosec B308 B703


def matching_step(key_hex, token):
    """The time step at which `token` is a code of the secret (one step of clock drift either way), or None."""
    token = normalize(token)
    if not (token.isascii() and token.isdigit()) or len(key_hex) != 40:  # "²" is a digit int() refuses
        return None
    totp = TOTP(bytes.fromhex(key_hex))
    totp.time = time.time()
    return totp.t() if totp.verify(int(token), tolerance=1) else None


def normalize(token):
    """What people type, as codes are stored: no spaces or dashes, lower case (backup codes are base32)."""
    return "".join((token or "").split()).replace("-", "").lower()[:16]


def app_device(user):
    """The user's confirmed authenticator app, or None."""
    return TOTPDevice.objects.filter(user=user, confirmed=True).first()


def has_second_factor(user):
    return user.is_authenticated and any(True for _ in devices_for_user(user, confirmed=True))


def backup_codes_left(user):
    device = StaticDevice.objects.filter(user=user, confirmed=True).first()
    return device.token_set.count() if device else 0


def is_verified(user):
    """Whether this sign-in was verified with a second factor (False for users that carry no sign-in)."""
    check = getattr(user, "is_verified", None)
    return bool(check and check())


def teams_requiring(user):
    """The teams that require a second factor of this user's role in them (approver or admin)."""
    if not user.is_authenticated:
        return []
    return [m.team for m in Membership.objects.filter(user=user, role__in=ROLES_THAT_NEED_IT,
                                                      team__require_two_factor=True).select_related("team")]
