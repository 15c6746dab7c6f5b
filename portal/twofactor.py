"""The second factor (django-otp): an authenticator app (TOTP) per user, with single-use backup codes for the day the
phone is lost. What it reads and draws, and its state changes (`two_factor_*`, `team_set_two_factor`), each audited.

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
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.safestring import mark_safe
from django_otp import devices_for_user
from django_otp.oath import TOTP
from django_otp.plugins.otp_static.models import StaticDevice, StaticToken
from django_otp.plugins.otp_totp.models import TOTPDevice

from .access import check_team_action
from .models import Action, Membership, Role, Team
from .services import audit

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


# --- State changes, each audited -------------------------------------------------------------------------------------


def two_factor_enroll(*, user, key_hex, token, request=None):
    """Set up the authenticator app whose secret is `key_hex`, once the user typed a current code of it. Replaces any
    earlier app and backup codes. Returns the new backup codes, to show once."""
    step = matching_step(key_hex, token)
    if step is None:
        raise ValidationError("That code does not match: type the six digits your app shows now (the phone's clock must "
                              "be right), or scan the QR code again.")
    with transaction.atomic():
        TOTPDevice.objects.filter(user=user).delete()
        TOTPDevice.objects.create(user=user, name="Authenticator app", key=key_hex, confirmed=True, last_t=step)
        codes = _backup_codes_replace(user)
        audit(action="auth.two_factor_enroll", summary=f"{user.username} set up a second factor (authenticator app)",
              actor=user, obj=user, request=request)
    return codes


def two_factor_backup_codes_renew(*, user, request=None):
    """New backup codes for a user with an authenticator app; the old ones stop working. Returns them, to show once."""
    if app_device(user) is None:
        raise ValidationError("Set up an authenticator app first; backup codes come with it.")
    with transaction.atomic():
        codes = _backup_codes_replace(user)
        audit(action="auth.two_factor_backup_codes", summary=f"{user.username} made new backup codes", actor=user,
              obj=user, request=request)
    return codes


def _backup_codes_replace(user):
    # The same device keeps its id, so a sign-in verified with one of the old codes stays verified.
    device = StaticDevice.objects.filter(user=user).first() or StaticDevice.objects.create(user=user, name="Backup codes",
                                                                                          confirmed=True)
    device.token_set.all().delete()
    codes = [StaticToken.random_token() for _ in range(BACKUP_CODES)]
    StaticToken.objects.bulk_create(StaticToken(device=device, token=code) for code in codes)
    return codes


def two_factor_verify(*, user, token, request=None):
    """Check a code from the user's app, or one of their backup codes (used up). Returns the device that matched.
    Raises ValidationError. After each wrong code django-otp makes the user wait, twice as long each time (1 s, 2 s,
    4 s, ...); a code typed while waiting is not even tried."""
    token = normalize(token)
    with transaction.atomic():
        devices = list(devices_for_user(user, confirmed=True, for_verify=True))
        waits = [info["locked_until"] for allowed, info in (device.verify_is_allowed() for device in devices)
                 if not allowed and info and info.get("locked_until")]
        if devices and len(waits) == len(devices):
            seconds = max(1, int((min(waits) - timezone.now()).total_seconds()) + 1)
            raise ValidationError(f"Too many wrong codes: wait {seconds} seconds before the next try.")
        for device in devices:
            if token and device.verify_token(token):
                audit(action="auth.two_factor_verify", summary=f"{user.username} signed in with "
                      f"{'a backup code' if isinstance(device, StaticDevice) else 'their authenticator app'}",
                      actor=user, obj=user, request=request)
                return device
    audit(action="auth.two_factor_failed", summary=f"a wrong second-factor code for {user.username}",
          actor_name=user.username, obj=user, request=request)
    raise ValidationError("That code is not right.")


def two_factor_remove(*, user, actor, request=None, reason=""):
    """Remove the user's second factor (app and backup codes). `actor` is the user themselves, a superuser in the
    admin site, or None for `manage.py two_factor_reset` (then `reason` says who asked)."""
    with transaction.atomic():
        removed = TOTPDevice.objects.filter(user=user).delete()[0] + StaticDevice.objects.filter(user=user).delete()[0]
        if not removed:
            return 0
        by = "themselves" if actor is not None and actor.pk == user.pk else (actor.username if actor else "an operator")
        audit(action="auth.two_factor_remove", summary=f"the second factor of {user.username} was removed by {by}",
              actor=actor, actor_name=None if actor else "manage.py two_factor_reset", obj=user, request=request,
              detail={"reason": reason, "devices": removed})
    return removed


def team_set_two_factor(*, team, required, actor, request=None):
    """Require (or stop requiring) a second factor of the team's approvers and admins. Only its admins may; to turn it
    on they must have signed in with one themselves, or they would lock themselves out of the team's administration."""
    check_team_action(actor, team, Action.ADMIN)
    if required and not team.require_two_factor and not is_verified(actor):
        raise PermissionDenied("Sign in with a second factor yourself before requiring one of the team: set one up on "
                               "your two-factor page.")
    with transaction.atomic():
        if Team.objects.filter(pk=team.pk).exclude(require_two_factor=required).update(require_two_factor=required):
            audit(action="team.two_factor", team=team, obj=team, actor=actor, request=request,
                  summary=f"{'required' if required else 'stopped requiring'} a second factor of {team}'s approvers "
                          "and admins", detail={"required": required})
        team.require_two_factor = required
    return team
