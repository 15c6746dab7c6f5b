"""People, teams and their roles, and their credentials: users, teams, memberships, the identity provider's group
mappings, and the REST API's access tokens."""


from django.conf import settings
from django.contrib.auth.models import AbstractUser
from django.db import models
from django.urls import reverse
from django.utils import timezone
from django.utils.text import slugify

from ..hashedsecrets import HashedSecret


class User(AbstractUser):
    """A person. `is_helpdesk` lets them read every team's host state and history, with no secrets and no actions."""

    is_helpdesk = models.BooleanField(
        "help-desk", default=False, help_text="Reads host state and history of every team; sees no secrets, acts on nothing."
    )
    oidc_subject = models.CharField(
        "identity provider subject", max_length=255, null=True, blank=True, unique=True,
        help_text="The `sub` claim of the identity provider's account this user signs in with (portal.sso); empty for "
                  "local accounts, which the provider can never sign in as.")

    def __str__(self):
        return self.get_full_name() or self.username


class Role(models.TextChoices):
    VIEWER = "viewer", "Viewer"
    DEVELOPER = "developer", "Developer"
    APPROVER = "approver", "Approver"
    OPERATOR = "operator", "Operator"
    ADMIN = "admin", "Admin"


class Action(models.TextChoices):
    """What a role may do in a team. Access helpers ask for one of these."""

    VIEW = "view", "see the team's images, builds, promotions and hosts"
    DEVELOP = "develop", "edit Containerfiles, run builds and conversions, request promotions"
    APPROVE = "approve", "sign off promotions"
    OPERATE = "operate", "act on hosts"
    ADMIN = "admin", "manage members, stages, hosts and credentials"


ROLE_ACTIONS = {
    Role.VIEWER: {Action.VIEW},
    Role.DEVELOPER: {Action.VIEW, Action.DEVELOP},
    Role.APPROVER: {Action.VIEW, Action.DEVELOP, Action.APPROVE},
    Role.OPERATOR: {Action.VIEW, Action.OPERATE},
    Role.ADMIN: {Action.VIEW, Action.DEVELOP, Action.APPROVE, Action.OPERATE, Action.ADMIN},
}


class TeamScopedQuerySet(models.QuerySet):
    """Rows that belong to a team, reached from each row by `team_path`: a user sees those of the teams they are a
    member of (superusers see all, anonymous users none). Each feature's QuerySet sets its own path."""

    team_path = "team"

    def visible_to(self, user):
        if not user.is_authenticated:
            return self.none()
        if user.is_superuser:
            return self
        return self.filter(**{f"{self.team_path}__in": Membership.objects.filter(user=user).values("team")})


class TeamQuerySet(models.QuerySet):
    def visible_to(self, user):
        if not user.is_authenticated:
            return self.none()
        if user.is_superuser:
            return self
        return self.filter(memberships__user=user)


class Team(models.Model):
    """A group of people owning image definitions, stages and hosts."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    require_two_factor = models.BooleanField(
        "require a second factor", default=False,
        help_text="Approvers and admins must sign in with a second factor to approve or administer in this team.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TeamQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    def get_absolute_url(self):
        return reverse("portal:team_detail", args=[self.slug])

    @staticmethod
    def slug_for(name):
        return slugify(name)[:100]


# A team token's own user (portal.tokens): it acts through a membership, but it is no one to list, ask or tell.
IS_TEAM_TOKEN = models.Q(access_tokens__team__isnull=False)


class MembershipQuerySet(models.QuerySet):
    def people(self):
        """Memberships of people: member lists, pickers and recipients leave out team tokens' own users."""
        return self.exclude(user__in=User.objects.filter(IS_TEAM_TOKEN))


class Membership(models.Model):
    """One user's role in one team. A user may belong to several teams, with one role in each."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.VIEWER)
    from_identity_provider = models.BooleanField(
        default=False, help_text="Given by the identity provider's groups at sign-in (portal.sso): the next sign-in "
                                 "changes or removes it to follow the groups.")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "team"], name="one_membership_per_user_and_team")]
        ordering = ["team__name", "user__username"]

    def __str__(self):
        return f"{self.user} is {self.role} in {self.team}"

    def allows(self, action):
        return action in ROLE_ACTIONS[self.role]


class IdentityGroupMapping(models.Model):
    """A group of the identity provider (its `groups` claim) gives its members `role` in `team` at sign-in
    (portal.sso). OIDC_GROUP_MAPPING in the settings holds more of these; the admin site edits these rows."""

    group = models.CharField(max_length=200, help_text="The group's name exactly as the provider's groups claim has it.")
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="+")
    role = models.CharField(max_length=20, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["group", "team__name"]
        constraints = [models.UniqueConstraint(fields=["group", "team"], name="one_role_per_group_and_team")]

    def __str__(self):
        return f"{self.group} → {self.role} in {self.team}"


# --- API tokens ------------------------------------------------------------------------------------------------------


class Scope(models.TextChoices):
    """What an API token may be used for. A scope is a ceiling: the token's user (or team) must still hold the role."""

    READ = "read", "Read everything the owner may see"
    BUILD = "build", "Definitions, revisions and builds: create, trigger, cancel, retry"
    PROMOTE = "promote", "Request promotions and rollbacks"
    APPROVE = "approve", "Approve and reject promotions (user tokens only)"
    OPERATE = "operate", "Act on hosts"
    ADMIN = "admin", "Manage teams and members (user tokens only)"


# Scopes a team token may not hold: approving and administering are a person's acts.
PERSONAL_SCOPES = (Scope.APPROVE, Scope.ADMIN)


class AccessTokenQuerySet(models.QuerySet):
    def usable(self, now=None):
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))


class AccessToken(HashedSecret, models.Model):
    """A bearer token for the REST API (/api/v1/), of one user (acting as them, in all their teams) or of one team
    (`team` set: for pipelines that outlive a person; `user` is then the token's own user, a member of that team only,
    made and deactivated with the token by `portal.tokens.token_*`).

    Only the sha256 of the secret is stored: the secret is shown once, when the token is made. `two_factor` says the
    token was made in a sign-in verified with a second factor: teams that require one for approvers accept approvals only
    from such tokens (`portal.access.second_factor_refusal` reads it through the user's `is_verified()`).
    """

    PREFIX = "impt_"

    name = models.CharField(max_length=100)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                             related_name="access_tokens")
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="access_tokens")
    scopes = models.JSONField(default=list)
    token_hash = models.CharField(max_length=64, unique=True)
    hint = models.CharField(max_length=16, help_text="The first characters, to recognise it.")
    two_factor = models.BooleanField(default=False, help_text="Made in a sign-in verified with a second factor.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = AccessTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.name} ({self.hint}…)"

    @property
    def is_team_token(self):
        return self.team_id is not None

    def state(self, now=None):
        """"active", "expired" or "revoked"."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= (now or timezone.now()):
            return "expired"
        return "active"
