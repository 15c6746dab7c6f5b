"""Secrets stay secret: a git token lives only in the team's encrypted git login, reaches git through GIT_ASKPASS, and
appears in no command line, run log, image, page, audit record or plain database column; a URL with a token in it is
refused with a form error that says where the login goes; rotate_secrets re-encrypts everything or nothing.

The planted-secret test builds for real: a private repository over smart HTTP (git http-backend behind Basic auth),
podman, docker-registry.
"""

import subprocess
from io import StringIO

import pytest
from django.db import connection
from django.urls import reverse

from builds import integrations, pipeline, services
from builds.models import Build, BuildStatus, GitCredential
from portal.logsink import lines_after
from portal.models import AuditEvent
from tests.builds.fixtures import BASE_IMAGE
from tests.helpers import ProcessWatcher

TOKEN = "glpat-planted-7c1e0a93d54b4f6e"  # fixed: test ids hold it, and xdist workers must agree on them


def raw_database_text():
    """Every column of every row as the database holds it (encrypted columns stay ciphertext)."""
    out = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')  # noqa: S608 - table names from the schema itself
            for row in cursor.fetchall():
                out.append(" ".join(bytes(v).decode(errors="replace") if isinstance(v, (bytes, memoryview)) else str(v)
                                    for v in row))
    return "\n".join(out)


def log_text(run):
    return "\n".join(text for _, text in lines_after(run))


def save_revision(client, definition, **fields):
    data = {"containerfile": f"FROM {BASE_IMAGE}\nRUN true\n", "context_kind": "git", "git_ref": "main",
            "message": "from git", **fields}
    return client.post(reverse("builds:revision_create", args=[definition.pk]), data)


# --- A token in a URL ------------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("url", [f"https://ci:{TOKEN}@git.example.com/acme/os.git",
                                 f"https://{TOKEN}@git.example.com/acme/os.git",
                                 f"ssh://git:{TOKEN}@git.example.com/acme/os.git"])
def test_a_git_url_with_a_token_is_a_form_error_that_says_where_the_login_goes(personas, client_for, url):
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    response = save_revision(client_for(personas.developer), definition, git_url=url)
    assert response.status_code == 400
    [error] = response.context["form"].errors["git_url"]
    assert "save them as a git login for git.example.com on the team's build integrations page" in error
    assert TOKEN not in error
    assert not definition.revisions.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["ssh://git@git.example.com/acme/os.git", "git@git.example.com:acme/os.git",
                                 "https://git.example.com/acme/os.git"])
def test_a_git_url_without_a_secret_saves(personas, client_for, url):
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    response = save_revision(client_for(personas.developer), definition, git_url=url)
    assert response.status_code == 302, response.context["form"].errors
    assert definition.revisions.get().git_url == url


# --- Git logins on the integrations page ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_git_logins_are_for_team_admins_and_their_token_is_never_shown(personas, client_for):
    create = reverse("builds:git_credential_create", args=[personas.team.slug])
    data = {"host": "git.example.com", "username": "ci", "token": TOKEN}
    assert client_for(None).post(create, data).status_code == 302  # to the login page
    assert client_for(personas.outsider).post(create, data).status_code == 404
    for user in (personas.viewer, personas.developer, personas.operator, personas.helpdesk):
        assert client_for(user).post(create, data).status_code in (403, 404)
    assert not GitCredential.objects.exists()

    assert client_for(personas.admin).post(create, data).status_code == 302
    credential = GitCredential.objects.get()
    assert (credential.team, credential.host, credential.username, credential.token) == \
        (personas.team, "git.example.com", "ci", TOKEN)
    page = client_for(personas.admin).get(reverse("builds:integrations", args=[personas.team.slug])).content.decode()
    assert "git.example.com" in page and TOKEN not in page

    # An empty token keeps the stored one.
    assert client_for(personas.admin).post(create, {"host": "git.example.com", "username": "bot"}).status_code == 302
    credential.refresh_from_db()
    assert (credential.username, credential.token) == ("bot", TOKEN)

    delete = reverse("builds:git_credential_delete", args=[credential.pk])
    assert client_for(personas.outsider).post(delete).status_code == 404
    assert client_for(personas.developer).post(delete).status_code == 403
    assert client_for(personas.admin).post(delete).status_code == 302
    assert not GitCredential.objects.exists()
    actions = list(AuditEvent.objects.filter(action__startswith="git_credential").order_by("pk")
                   .values_list("action", flat=True))
    assert actions == ["git_credential.save", "git_credential.save", "git_credential.delete"]
    assert TOKEN not in raw_database_text()


@pytest.mark.django_db
@pytest.mark.parametrize(("host", "says"), [("127.0.0.1:3000", "loopback"), ("169.254.169.254", "metadata"),
                                            ("ci@git.example.com", "no user"), ("git.example.com/acme", "no user")])
def test_a_git_login_for_a_bad_or_internal_host_is_a_form_error(personas, client_for, host, says):
    response = client_for(personas.admin).post(reverse("builds:git_credential_create", args=[personas.team.slug]),
                                               {"host": host, "username": "ci", "token": TOKEN})
    assert response.status_code == 400 and says in " ".join(response.context["git_form"].errors["host"])
    assert not GitCredential.objects.exists()


# --- The planted secret ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_planted_git_token_appears_nowhere_but_its_encrypted_column(
        personas, client_for, git_server, oci_registry, local_builder, build_settings, podman_store):
    """The team admin saves a git login; a developer builds from the private repository. The token is used (the server
    lets the fetch in) and is then searched for in every process's command line during the build, the run log (with
    the echoed git commands), the pushed image's layers and configuration, the pages, the audit trail and every
    column of the database."""
    server = git_server(username="ci", token=TOKEN)
    url = server.repository("private-os", {"image/motd": "from a private repository\n"})
    admin, developer = client_for(personas.admin), client_for(personas.developer)
    assert admin.post(reverse("builds:git_credential_create", args=[personas.team.slug]),
                      {"host": server.host, "username": "ci", "token": TOKEN}).status_code == 302
    definition = services.definition_create(team=personas.team, user=personas.developer, name="private-os")
    response = save_revision(developer, definition, git_url=url, git_subdir="image",
                             containerfile=f"FROM {BASE_IMAGE}\nCOPY motd /etc/motd\nCOPY . /src\n"
                                           "RUN cat /etc/motd && env\n")
    assert response.status_code == 302, response.context["form"].errors
    revision = definition.revisions.get()

    build = services.build_start(revision=revision, user=personas.developer)
    with ProcessWatcher() as watcher:
        pipeline.build_execute(build.pk)
    build = Build.objects.with_related().get(pk=build.pk)
    log = log_text(build.run)
    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason + "\n" + log
    assert server.refused and server.authorized, "git logged in with the stored token after the 401"
    assert "from a private repository" in log
    assert f"fetch -q --depth=1 -- {url} main" in log  # the echoed command, without the token

    saved = subprocess.run([*podman_store.args(), "save", "--format", "docker-archive", build.image_id],
                           capture_output=True, check=True).stdout
    inspected = podman_store.run("image", "inspect", build.image_id).stdout
    pages = [client_for(user).get(path).content.decode()
             for user in (personas.admin, personas.developer, personas.viewer)
             for path in (reverse("builds:integrations", args=[personas.team.slug]), revision.get_absolute_url(),
                          build.get_absolute_url(), build.run.get_absolute_url(), reverse("portal:audit_list"))
             if client_for(user).get(path).status_code == 200]
    audit = [f"{e.summary} {e.detail}" for e in AuditEvent.objects.all()]
    assert len(pages) >= 10 and len(audit) >= 3
    assert TOKEN.encode() not in saved
    for where, text in [("a command line", "\n".join(watcher.seen)), ("the log", log), ("the image", inspected),
                        ("a page", "\n".join(pages)), ("the audit trail", "\n".join(audit)),
                        ("the database", raw_database_text())]:
        assert TOKEN not in text, f"the token is in {where}"
    assert any("git" in line and "fetch" in line for line in watcher.seen), "the watcher saw the fetch"


@pytest.mark.slow
def test_a_private_repository_without_a_git_login_fails_with_where_to_add_one(
        personas, git_server, oci_registry, local_builder, build_settings):
    server = git_server(username="ci", token=TOKEN)
    url = server.repository("private-os", {"motd": "x\n"})
    definition = services.definition_create(team=personas.team, user=personas.developer, name="private-os")
    revision = services.revision_create(definition=definition, user=personas.developer, context_kind="git",
                                        git_url=url, git_ref="main", containerfile=f"FROM {BASE_IMAGE}\nRUN true\n")
    build = services.build_start(revision=revision, user=personas.developer)
    pipeline.build_execute(build.pk)
    build = Build.objects.with_related().get(pk=build.pk)
    assert build.status == BuildStatus.FAILED and not server.authorized
    assert "save" in build.hint and "git login" in build.hint


# --- The egress policy for git remotes -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_git_remote_on_loopback_or_at_a_metadata_address_is_a_form_error(personas, client_for, git_server,
                                                                           settings):
    server = git_server(token=TOKEN)
    url = server.repository("os", {"motd": "x\n"})
    settings.EGRESS_ALLOW = []  # the server runs, but nothing allows it
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    for bad, says in ((url, "loopback"), ("https://169.254.169.254/latest/meta-data.git", "metadata"),
                      ("git@169.254.169.254:x/y.git", "metadata")):
        response = save_revision(client_for(personas.developer), definition, git_url=bad)
        assert response.status_code == 400
        assert says in " ".join(response.context["form"].errors["git_url"])
    assert not definition.revisions.exists() and not server.refused and not server.authorized


@pytest.mark.slow
def test_a_git_remote_no_longer_allowed_is_refused_before_git_runs(
        personas, git_server, settings, oci_registry, local_builder, build_settings):
    server = git_server(token=TOKEN)
    url = server.repository("os", {"motd": "x\n"})
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    revision = services.revision_create(definition=definition, user=personas.developer, context_kind="git",
                                        git_url=url, git_ref="main", containerfile=f"FROM {BASE_IMAGE}\nRUN true\n")
    settings.EGRESS_ALLOW = []
    build = services.build_start(revision=revision, user=personas.developer)
    pipeline.build_execute(build.pk)
    build = Build.objects.with_related().get(pk=build.pk)
    assert build.status == BuildStatus.FAILED
    assert build.run.exit_reason.startswith("Refused before podman started: The repository URL points at 127.0.0.1")
    assert not server.refused and not server.authorized, "git never connected"


# --- rotate_secrets --------------------------------------------------------------------------------------------------


def stored(model, pk, field):
    """The column as the database holds it (ciphertext)."""
    with connection.cursor() as cursor:
        cursor.execute(f'SELECT "{field}" FROM "{model._meta.db_table}" WHERE id = %s', [pk])  # noqa: S608
        return cursor.fetchone()[0]


@pytest.fixture
def secrets_of_every_kind(personas):
    from builds.models import RegistryCredential
    from portal.models import NotificationWebhook

    return [
        integrations.registry_credential_save(team=personas.team, user=personas.admin, registry="quay.io",
                                          username="robot", password="registry-pw"),
        integrations.git_credential_save(team=personas.team, user=personas.admin, host="git.example.com", username="ci",
                                     token=TOKEN),
        NotificationWebhook.objects.create(team=personas.team, name="chat", url="https://chat.example.com/",
                                           secret="hook-secret", events=["build.failed"]),
        RegistryCredential.objects.create(team=personas.other_team, registry="ghcr.io", username="x", password="pw2"),
    ]


@pytest.mark.django_db
def test_rotate_secrets_re_encrypts_every_secret_with_the_new_key(settings, secrets_of_every_kind):
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    old_key = settings.FIELD_ENCRYPTION_KEYS[0]
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), old_key]
    out = StringIO()
    call_command("rotate_secrets", stdout=out)
    assert "builds.GitCredential: 1 row(s)" in out.getvalue() and "builds.RegistryCredential: 2 row(s)" in \
        out.getvalue() and "Re-encrypted" in out.getvalue()
    settings.FIELD_ENCRYPTION_KEYS = settings.FIELD_ENCRYPTION_KEYS[:1]  # the old key is gone now
    for obj in secrets_of_every_kind:
        fresh = type(obj).objects.get(pk=obj.pk)
        assert [getattr(fresh, f) for f in ("password", "token", "secret") if hasattr(fresh, f)] == \
            [getattr(obj, f) for f in ("password", "token", "secret") if hasattr(obj, f)]
    assert AuditEvent.objects.filter(action="secrets.rotate").exists()


@pytest.mark.django_db
def test_rotate_secrets_changes_nothing_when_one_secret_cannot_be_read_and_names_it(settings, secrets_of_every_kind):
    from cryptography.fernet import Fernet
    from django.core.management import CommandError, call_command

    from builds.models import RegistryCredential
    from portal import crypto

    stray = RegistryCredential.objects.get(registry="ghcr.io")
    foreign = Fernet(Fernet.generate_key()).encrypt(b"lost").decode()
    with connection.cursor() as cursor:
        cursor.execute(f'UPDATE "{RegistryCredential._meta.db_table}" SET password = %s WHERE id = %s',
                       [foreign, stray.pk])
    before = {(type(o), o.pk): stored(type(o), o.pk, f) for o in secrets_of_every_kind
              for f in ("password", "token", "secret") if hasattr(o, f)}
    settings.FIELD_ENCRYPTION_KEYS = [Fernet.generate_key().decode(), *settings.FIELD_ENCRYPTION_KEYS]
    with pytest.raises(CommandError) as failed:
        call_command("rotate_secrets", stdout=StringIO())
    assert str(failed.value) == (f"builds.RegistryCredential row {stray.pk}, field password: no key in "
                                 "FIELD_ENCRYPTION_KEYS decrypts it (was a key removed before this row was "
                                 "re-encrypted?). Nothing was changed.")
    after = {(type(o), o.pk): stored(type(o), o.pk, f) for o in secrets_of_every_kind
             for f in ("password", "token", "secret") if hasattr(o, f)}
    assert after == before, "no row was re-encrypted"
    assert crypto.decrypt(after[(RegistryCredential, secrets_of_every_kind[0].pk)]) == "registry-pw"
    assert not AuditEvent.objects.filter(action="secrets.rotate").exists()
