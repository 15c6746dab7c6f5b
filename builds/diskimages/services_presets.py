"""A team's saved disk image configurations (presets) and its AWS credentials for AMI uploads: every change written
once, as in `builds.diskimages.services` (access checked, validated, written and audited in one transaction)."""

from __future__ import annotations

import re

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction

from portal.models import Action, Team, User
from portal.services import audit

from . import diskchecks, diskconfig
from .models import CloudCredential, DiskImagePreset
from .services import check_role

AWS_ACCESS_KEY_RE = re.compile(r"^[A-Z0-9]{16,128}$")


# --- Presets ---------------------------------------------------------------------------------------------------------


def _preset_errors(config: dict) -> diskconfig.Report:
    report = diskchecks.validate(config)
    if report.errors:
        raise ValidationError({"config": report.error_texts()})
    return report


def preset_save(*, team: Team, user: User | None, name: str, config: dict, source_format: str = "toml",
                description: str = "", preset: DiskImagePreset | None = None, notes=(), request=None) -> DiskImagePreset:
    """Create or change a team's preset. The configuration must pass diskchecks.validate() (errors name the field)."""
    check_role(user, team, Action.DEVELOP)
    name = (name or "").strip()
    if not name:
        raise ValidationError({"name": ["Give the configuration a name."]})
    report = _preset_errors(config)
    warnings = [str(n) for n in notes] + report.warning_texts()
    created = preset is None
    with transaction.atomic():
        if created:
            preset = DiskImagePreset(team=team, created_by=user if user is not None and user.is_authenticated else None)
        elif preset.team_id != team.pk:
            raise PermissionDenied("That configuration belongs to another team.")
        preset.name, preset.description = name, description.strip()
        preset.config, preset.source_format, preset.warnings = config, source_format if source_format in (
            "toml", "json") else "toml", warnings
        try:
            with transaction.atomic():
                preset.save()
        except IntegrityError:
            raise ValidationError({"name": [f"{team} already has a configuration named {name!r}."]}) from None
        audit(action="disk_image_preset.create" if created else "disk_image_preset.update", actor=user, team=team,
              obj=preset, request=request,
              summary=f"{'saved' if created else 'changed'} disk image configuration {name!r} of {team}",
              detail={"customizations": sorted(diskconfig.customizations(config)), "warnings": len(warnings)})
    return preset


def preset_import(*, team: Team, user: User | None, name: str, text: str, filename: str = "", fmt: str = "",
                  description: str = "", request=None) -> DiskImagePreset:
    """A preset from a config.toml / config.json file, as bootc-image-builder would read it."""
    check_role(user, team, Action.DEVELOP)
    try:
        config, fmt, notes = diskconfig.parse(text, filename=filename, fmt=fmt)
    except diskconfig.ConfigError as exc:
        raise ValidationError({"config": [str(exc)]}) from None
    return preset_save(team=team, user=user, name=name, config=config, source_format=fmt, description=description,
                       notes=notes, request=request)


def preset_delete(*, preset: DiskImagePreset, user: User | None, request=None):
    check_role(user, preset.team, Action.DEVELOP)
    with transaction.atomic():
        audit(action="disk_image_preset.delete", actor=user, team=preset.team, obj=preset, request=request,
              summary=f"deleted disk image configuration {preset.name!r} of {preset.team}")
        preset.delete()


# --- AWS credentials -------------------------------------------------------------------------------------------------


def cloud_credential_save(*, team: Team, user: User | None, name: str, access_key_id: str, secret_access_key: str,
                          session_token: str = "", request=None) -> CloudCredential:
    """Add (or replace, by name) an AWS access key for AMI uploads. Team admins only."""
    check_role(user, team, Action.ADMIN)
    access_key_id = access_key_id.strip()
    if not AWS_ACCESS_KEY_RE.match(access_key_id):
        raise ValidationError({"access_key_id": ["An AWS access key ID is 16-128 upper-case letters and digits "
                                                 "(e.g. AKIA...)."]})
    if not secret_access_key.strip() or any(c in secret_access_key for c in "\r\n"):
        raise ValidationError({"secret_access_key": ["Give the secret access key (one line)."]})
    if any(c in session_token for c in "\r\n"):
        raise ValidationError({"session_token": ["The session token is one line."]})
    with transaction.atomic():
        credential = CloudCredential.objects.select_for_update().filter(team=team, name=name.strip()).first()
        created = credential is None
        if created:
            credential = CloudCredential(team=team, name=name.strip(), created_by=user)
        credential.access_key_id = access_key_id
        credential.secret_access_key = secret_access_key.strip()
        credential.session_token = session_token.strip()
        credential.save()
        audit(action="cloud_credential.save", actor=user, team=team, obj=credential, request=request,
              summary=f"{'added' if created else 'replaced'} AWS credentials {credential.name!r} of {team} "
                      f"({credential.access_key_hint})")
    return credential


def cloud_credential_delete(*, credential: CloudCredential, user: User | None, request=None):
    check_role(user, credential.team, Action.ADMIN)
    with transaction.atomic():
        audit(action="cloud_credential.delete", actor=user, team=credential.team, obj=credential, request=request,
              summary=f"deleted AWS credentials {credential.name!r} of {credential.team}")
        credential.delete()
