"""A team's integrations (`builds.integrations`): registry and git logins, the first JSON API's tokens and git
webhooks."""


from django.conf import settings
from django.db import models
from django.utils import timezone

from portal.crypto import EncryptedTextField
from portal.hashedsecrets import HashedSecret
from portal.models import Team

# --- Registry credentials and API tokens -----------------------------------------------------------------------------


class RegistryCredential(models.Model):
    """A team's login to one registry (host[:port]), used to push and inspect. The password is stored encrypted.

    TLS is verified unless `insecure` is set, which is meant for a loopback development registry.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="registry_credentials")
    registry = models.CharField(max_length=255, help_text="host[:port], e.g. quay.io or 127.0.0.1:5000")
    username = models.CharField(max_length=200, blank=True)
    password = EncryptedTextField(blank=True)
    insecure = models.BooleanField(default=False, help_text="Plain HTTP / no TLS verification. Only for a loopback "
                                                            "development registry.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team", "registry"]
        constraints = [models.UniqueConstraint(fields=["team", "registry"], name="one_credential_per_team_registry")]

    def __str__(self):
        return f"{self.username or '(anonymous)'}@{self.registry}"


class GitCredential(models.Model):
    """A team's login to a git host over HTTPS: a user name and a token (stored encrypted), used for every revision of
    the team that builds from that host. git gets it through GIT_ASKPASS from a 0600 file on the builder, never on a
    command line or in a URL. An empty user name means the host takes the token as the user name
    (https://TOKEN@host)."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="git_credentials")
    host = models.CharField(max_length=255, help_text="host[:port] of the git server, e.g. github.com")
    username = models.CharField(max_length=200, blank=True)
    token = EncryptedTextField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["team", "host"]
        constraints = [models.UniqueConstraint(fields=["team", "host"], name="one_git_credential_per_team_host")]

    def __str__(self):
        return f"{self.username or '(token)'}@{self.host}"


class ApiToken(HashedSecret, models.Model):
    """A team's token for CI pipelines: triggers builds and reads their status with the developer's rights in that team.

    Only the sha256 of the token is stored; the token itself is shown once, when it is created.
    """

    PREFIX = "imp_"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    token_hash = models.CharField(max_length=64, unique=True)
    hint = models.CharField(max_length=16, help_text="The first characters, to recognise it.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["team", "-created_at"]

    def __str__(self):
        return f"{self.team.slug}: {self.name} ({self.hint}…)"

    @property
    def active(self):
        return self.revoked_at is None


class GitWebhook(models.Model):
    """An inbound git push webhook for a team (GitHub or GitLab style, HMAC/secret-verified).

    A push rebuilds the team's definitions whose current revision builds from that repository and branch.
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="git_webhooks")
    key = models.CharField(max_length=43, unique=True, help_text="The URL's unguessable part.")
    secret = EncryptedTextField(help_text="Shared secret: GitHub signs with it, GitLab sends it as a token.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    last_delivery_at = models.DateTimeField(null=True, blank=True)
    last_delivery_summary = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["team", "created_at"]

    def __str__(self):
        return f"{self.team.slug} webhook {self.key[:6]}…"
