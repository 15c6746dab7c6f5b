import json

from django.conf import settings
from oauth2_provider.oauth2_validators import OAuth2Validator


def directory():
    return json.loads((settings.STATE / "users.json").read_text())


class GroupsValidator(OAuth2Validator):
    """Standard claims plus `groups` (with the profile scope), read from the users file at each sign-in."""

    oidc_claim_scope = {**OAuth2Validator.oidc_claim_scope, "groups": "profile"}

    def get_additional_claims(self, request):
        entry = directory().get(request.user.username, {})
        return {"preferred_username": request.user.username, "email": entry.get("email", ""),
                "given_name": entry.get("given_name", ""), "family_name": entry.get("family_name", ""),
                "groups": entry.get("groups", [])}
