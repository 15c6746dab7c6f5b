"""Access helpers for image definitions, revisions, builds, builders, credentials and tokens.

Same rule as `portal.access`: outside the user's teams an object does not exist (404); a role that may see but not act
gets 403. Builders are portal-wide: any logged-in user sees them (no secrets), only superusers change them.
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404

from portal.access import get_object_for_user
from portal.models import Action

from .models import ApiToken, Build, Builder, GitCredential, GitWebhook, ImageDefinition, RegistryCredential, Revision


def get_definition_for_user(user, pk, *, action=Action.VIEW):
    return get_object_for_user(
        ImageDefinition.objects.select_related("team"), user, team_of=lambda d: d.team, action=action, pk=pk
    )


def get_definition_by_reference_for_user(user, reference, *, action=Action.VIEW):
    """The definition named by `reference` as the API and the CLI name one: its id (an int or a string of digits),
    "team/name", or a bare "name" when exactly one of the user's teams has a definition of that name. 404 otherwise,
    also for another team's: the same answer as for one that does not exist."""
    if isinstance(reference, int) and not isinstance(reference, bool):
        return get_definition_for_user(user, reference, action=action)
    text = str(reference or "").strip()
    if text.isdecimal() and text.isascii():
        return get_definition_for_user(user, int(text), action=action)
    slug, _, name = text.rpartition("/")
    if not name or "\x00" in text:
        raise Http404("No such object.")
    found = ImageDefinition.objects.visible_to(user).filter(name=name)
    if slug:
        found = found.filter(team__slug=slug)
    pks = list(found.values_list("pk", flat=True)[:2])
    if len(pks) != 1:
        raise Http404("No such object.")
    return get_definition_for_user(user, pks[0], action=action)


def get_revision_for_user(user, definition_pk, number, *, action=Action.VIEW):
    return get_object_for_user(
        Revision.objects.select_related("definition", "definition__team", "author"),
        user,
        team_of=lambda r: r.definition.team,
        action=action,
        definition_id=definition_pk,
        number=number,
    )


def get_build_for_user(user, pk=None, *, action=Action.VIEW, definition_pk=None, number=None):
    """A build by its id, or by its definition and number (what its page's URL and everything people read call it)."""
    lookup = {"pk": pk} if pk is not None else {"definition_id": definition_pk, "number": number}
    return get_object_for_user(
        Build.objects.with_related(), user, team_of=lambda b: b.definition.team, action=action, **lookup
    )


def get_registry_credential_for_user(user, pk, *, action=Action.ADMIN):
    return get_object_for_user(
        RegistryCredential.objects.select_related("team"), user, team_of=lambda c: c.team, action=action, pk=pk
    )


def get_git_credential_for_user(user, pk, *, action=Action.ADMIN):
    return get_object_for_user(
        GitCredential.objects.select_related("team"), user, team_of=lambda c: c.team, action=action, pk=pk
    )


def get_api_token_for_user(user, pk, *, action=Action.ADMIN):
    return get_object_for_user(ApiToken.objects.select_related("team"), user, team_of=lambda t: t.team,
                               action=action, pk=pk)


def get_webhook_for_user(user, pk, *, action=Action.ADMIN):
    return get_object_for_user(GitWebhook.objects.select_related("team"), user, team_of=lambda h: h.team,
                               action=action, pk=pk)


def get_builder_for_user(user, pk, *, manage=False):
    """Any logged-in user may see a builder; only superusers may change one."""
    if not user.is_authenticated:
        raise Http404("No such object.")
    try:
        builder = Builder.objects.get(pk=pk)
    except (Builder.DoesNotExist, ValueError, TypeError):
        raise Http404("No such object.") from None
    if manage and not user.is_superuser:
        raise PermissionDenied("Only portal administrators manage builders.")
    return builder


