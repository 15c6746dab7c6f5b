"""Pages and forms of the builds app: access for every persona, bad input, triggers (its integrations, the JSON API
and the git webhook are in tests/builds/test_integrations.py).

Builds here are only queued (the task is enqueued after commit, which a `db` test never reaches); real builds are in
tests/builds/test_pipeline.py and tests/builds/test_worker.py.
"""

import hashlib
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from builds import services
from builds.models import Build, Builder, ImageDefinition, Revision
from portal.models import AuditEvent, RunStatus
from tests.builds.fixtures import CONTAINERFILE


def page_urls(definition, build):
    return {
        "definition_list": reverse("builds:definition_list"),
        "definition_detail": reverse("builds:definition_detail", args=[definition.pk]),
        "revision_detail": reverse("builds:revision_detail", args=[definition.pk, 1]),
        "build_list": reverse("builds:build_list"),
        "build_detail": reverse("builds:build_detail", args=[build.pk]),
        "build_page": build.get_absolute_url(),
        "build_compare": reverse("builds:build_compare") + f"?a={build.pk}&b={build.pk}",
        "definition_compare": reverse("builds:definition_compare", args=[definition.pk]) + f"?a={build.number}&b=1",
        "builder_list": reverse("builds:builder_list"),
    }


# --- Access ----------------------------------------------------------------------------------------------------------


def test_anonymous_users_are_sent_to_the_login_page(client, definition, build):
    for name, url in page_urls(definition, build).items():
        response = client.get(url)
        assert response.status_code == 302 and "/login/" in response["Location"], name


def test_outsiders_get_404_for_another_teams_objects(client_for, personas, definition, build):
    c = client_for(personas.outsider)
    for name in ("definition_detail", "revision_detail", "build_detail", "build_page", "build_compare",
                 "definition_compare"):
        assert c.get(page_urls(definition, build)[name]).status_code == 404, name
    assert c.get(reverse("builds:revision_create", args=[definition.pk])).status_code == 404
    assert c.post(reverse("builds:definition_build", args=[definition.pk])).status_code == 404
    assert c.post(reverse("portal:run_cancel", args=[build.run_id])).status_code == 404
    # Lists show nothing of the other team.
    link = f'href="{definition.get_absolute_url()}"'
    assert link not in c.get(reverse("builds:definition_list")).content.decode()
    assert link not in c.get(reverse("builds:build_list")).content.decode()
    assert link in client_for(personas.viewer).get(reverse("builds:build_list")).content.decode()


def test_viewers_see_everything_but_may_not_change_anything(client_for, personas, definition, build):
    c = client_for(personas.viewer)
    for name, url in page_urls(definition, build).items():
        assert c.get(url, follow=True).status_code == 200, name  # the id URLs redirect to the numbered ones
    assert c.get(reverse("builds:revision_create", args=[definition.pk])).status_code == 403
    assert c.get(reverse("builds:definition_edit", args=[definition.pk])).status_code == 403
    assert c.get(reverse("builds:definition_create")).status_code == 403
    assert c.post(reverse("builds:definition_build", args=[definition.pk])).status_code == 403
    assert c.post(reverse("portal:run_cancel", args=[build.run_id])).status_code == 403
    assert c.post(reverse("builds:definition_delete", args=[definition.pk])).status_code == 403
    assert c.get(reverse("builds:integrations", args=[personas.team.slug])).status_code == 403
    assert Build.objects.count() == 1
    page = c.get(reverse("builds:definition_detail", args=[definition.pk])).content.decode()
    assert "Build r1" not in page and "Edit Containerfile" not in page


def test_developers_see_and_act(client_for, personas, definition, build):
    c = client_for(personas.developer)
    for name, url in page_urls(definition, build).items():
        assert c.get(url, follow=True).status_code == 200, name  # the id URLs redirect to the numbered ones
    assert c.get(reverse("builds:revision_create", args=[definition.pk])).status_code == 200
    response = c.post(reverse("builds:definition_build", args=[definition.pk]))
    assert response.status_code == 302
    assert Build.objects.count() == 2
    assert "Build r1" in c.get(reverse("builds:definition_detail", args=[definition.pk])).content.decode()


def test_the_build_page_shows_status_revision_and_embeds_the_live_log(client_for, personas, build):
    page = client_for(personas.viewer).get(build.get_absolute_url()).content.decode()
    assert "Queued" in page and "Waiting for a worker" in page
    # The run's own live log viewer, streaming over the run's websocket, with the state it was rendered in ...
    assert f'data-ws-path="/ws/runs/{build.run.pk}/"' in page and 'data-status="queued"' in page
    assert reverse("portal:run_log_raw", args=[build.run.pk]) in page
    # ... and the header refreshes when the viewer sees the status or phase move (no timed polling).
    assert 'hx-trigger="run:changed from:document"' in page and 'hx-trigger="every' not in page


def test_the_build_header_refresh_brings_the_facts_out_of_band(client_for, personas, build):
    response = client_for(personas.viewer).get(reverse("builds:build_detail", args=[build.pk]), HTTP_HX_REQUEST="true",
                                               HTTP_HX_TARGET="build-live")
    page = response.content.decode()
    assert response.status_code == 200 and 'id="build-facts" hx-swap-oob="true"' in page
    assert 'id="log"' not in page  # the viewer is never swapped: it keeps its lines and its socket


def test_a_finished_build_page_stops_polling(client_for, personas, build):
    from portal.services import run_finish

    run_finish(build.run, status=RunStatus.FAILED, reason="boom")
    response = client_for(personas.viewer).get(reverse("builds:build_detail", args=[build.pk]), HTTP_HX_REQUEST="true",
                                               HTTP_HX_TARGET="build-live")
    assert response.status_code == 286
    assert "boom" in response.content.decode()


def test_cancel_of_a_queued_build_ends_it_at_once_and_returns_to_the_build(client_for, personas, build):
    page = client_for(personas.developer).get(build.get_absolute_url()).content.decode()
    assert f'action="{reverse("portal:run_cancel", args=[build.run_id])}"' in page  # the build page's Cancel button
    response = client_for(personas.developer).post(reverse("portal:run_cancel", args=[build.run_id]),
                                                   {"next": build.get_absolute_url()})
    assert response.status_code == 302 and response["Location"] == build.get_absolute_url()
    build.run.refresh_from_db()
    assert build.run.status == RunStatus.CANCELLED


def test_retry_makes_a_new_build_of_the_same_revision(client_for, personas, build):
    from portal.services import run_finish

    run_finish(build.run, status=RunStatus.FAILED, reason="x")
    page = client_for(personas.developer).get(build.get_absolute_url()).content.decode()
    assert f'action="{reverse("portal:run_retry", args=[build.run_id])}"' in page  # the build page's Retry button
    response = client_for(personas.developer).post(reverse("portal:run_retry", args=[build.run_id]), follow=True)
    new = Build.objects.exclude(pk=build.pk).get()
    assert response.redirect_chain[0][0] == new.get_absolute_url()
    assert f"Queued {new}: a retry of {build}." in response.content.decode()
    assert new.revision == build.revision and new.retry_of == build and new.number == build.number + 1


# --- Definitions and revisions: forms and bad input -----------------------------------------------------------------


def test_a_developer_creates_a_definition_from_a_template(client_for, personas, oci_registry_url):
    c = client_for(personas.developer)
    response = c.post(reverse("builds:definition_create"), {
        "team": personas.team.pk, "name": "edge-gw", "platforms": ["linux/amd64"], "timeout_minutes": 30,
        "build_args": "A=1\nB=x y;z", "starter": "centos10:edge-appliance",
    })
    assert response.status_code == 302, response.content.decode()[:2000]
    definition = ImageDefinition.objects.get(name="edge-gw")
    assert definition.repository == f"{oci_registry_url}/platform/edge-gw"
    assert definition.build_args == {"A": "1", "B": "x y;z"}
    page = c.get(response["Location"]).content.decode()
    assert "quay.io/centos-bootc/centos-bootc:stream10" in page and "greenboot" in page


@pytest.fixture
def oci_registry_url(settings):
    settings.REGISTRY_URL = "registry.example.test:5000"
    return settings.REGISTRY_URL


@pytest.mark.parametrize("name", ["Web OS", "-web", "web_", "UPPER", "a..b", "x" * 65])
def test_an_invalid_repository_name_is_a_form_error(client_for, personas, name):
    response = client_for(personas.developer).post(reverse("builds:definition_create"), {
        "team": personas.team.pk, "name": name, "platforms": ["linux/amd64"], "timeout_minutes": 30})
    assert response.status_code == 400
    assert not ImageDefinition.objects.exists()


def test_a_repository_with_a_tag_is_refused(client_for, personas):
    response = client_for(personas.developer).post(reverse("builds:definition_create"), {
        "team": personas.team.pk, "name": "ok", "repository": "quay.io/acme/ok:latest", "platforms": ["linux/amd64"],
        "timeout_minutes": 30})
    assert response.status_code == 400 and "registry/path" in response.content.decode()


@pytest.mark.parametrize("body,message", [
    ({"containerfile": "RUN echo hi\n"}, "no FROM"),
    ({"containerfile": "FROM x:1\nFRUM y\n"}, "unknown instruction"),
    ({"containerfile": "FROM x:1\n" + "# padding\n" * 120_000}, "1 MiB"),
])
def test_a_bad_containerfile_is_a_form_error_and_nothing_is_saved(client_for, personas, definition, body, message):
    response = client_for(personas.developer).post(reverse("builds:revision_create", args=[definition.pk]),
                                                   {"context_kind": "none", **body})
    assert response.status_code == 400
    assert message.lower() in response.content.decode().lower()
    assert definition.revisions.count() == 1


def test_a_binary_upload_is_refused(client_for, personas, definition):
    from django.core.files.uploadedfile import SimpleUploadedFile

    upload = SimpleUploadedFile("Containerfile", b"FROM x\n\x00\x01\x02\xff", content_type="application/octet-stream")
    response = client_for(personas.developer).post(reverse("builds:revision_create", args=[definition.pk]),
                                                   {"context_kind": "none", "upload": upload})
    assert response.status_code == 400 and "not text" in response.content.decode()
    assert definition.revisions.count() == 1


def test_saving_a_revision_keeps_the_warnings_and_the_revision_is_immutable(client_for, personas, definition):
    c = client_for(personas.developer)
    response = c.post(reverse("builds:revision_create", args=[definition.pk]), {
        "context_kind": "none", "message": "use latest", "containerfile": "FROM quay.io/fedora/fedora-bootc:latest\n"
                                                                          "ARG DB_PASSWORD=x\n"})
    assert response.status_code == 302
    revision = definition.revisions.get(number=2)
    codes = {w["code"] for w in revision.warnings}
    assert {"latest-base", "no-lint", "secret-in-arg"} <= codes
    assert revision.sha256 == hashlib.sha256(revision.containerfile.encode()).hexdigest()
    assert revision.author == personas.developer
    page = c.get(revision.get_absolute_url()).content.decode()
    assert "3 warnings" in page and "DB_PASSWORD" in page
    revision.message = "changed"
    with pytest.raises(TypeError):
        revision.save()


def test_saving_and_building_says_where_the_warnings_are_to_be_read(client_for, personas, definition):
    response = client_for(personas.developer).post(reverse("builds:revision_create", args=[definition.pk]), {
        "context_kind": "none", "message": "use latest", "and_build": "1",
        "containerfile": "FROM quay.io/fedora/fedora-bootc:latest\n"}, follow=True)
    page = response.content.decode()
    assert "Saved" in page and "open r2, linked at the top, to read them" in page and "see below" not in page


def test_check_without_saving_shows_the_report(client_for, personas, definition):
    response = client_for(personas.developer).post(reverse("builds:revision_create", args=[definition.pk]), {
        "context_kind": "none", "check": "1", "containerfile": "FROM quay.io/fedora/fedora-bootc:42\n"})
    assert response.status_code == 200 and "1 warning" in response.content.decode()
    assert definition.revisions.count() == 1


def test_context_files_are_saved_with_the_revision(client_for, personas, definition):
    from django.core.files.uploadedfile import SimpleUploadedFile

    c = client_for(personas.developer)
    response = c.post(reverse("builds:revision_create", args=[definition.pk]), {
        "context_kind": "files", "containerfile": CONTAINERFILE, "files_dir": "etc/ssh",
        "files": [SimpleUploadedFile("sshd_config", b"PermitRootLogin no\n")],
        "new_file_path": "etc/motd", "new_file_content": "hello\r\n"})
    assert response.status_code == 302, response.content.decode()[:3000]
    revision = definition.revisions.get(number=2)
    assert {f.path: bytes(f.content) for f in revision.context_files.all()} == {
        "etc/ssh/sshd_config": b"PermitRootLogin no\n", "etc/motd": b"hello\n"}
    # The next revision keeps them by default.
    response = c.post(reverse("builds:revision_create", args=[definition.pk]), {
        "context_kind": "files", "containerfile": CONTAINERFILE, "keep_files": ["etc/motd"]})
    assert response.status_code == 302
    assert [f.path for f in definition.revisions.get(number=3).context_files.all()] == ["etc/motd"]


def test_context_paths_that_escape_are_refused(client_for, personas, definition):
    response = client_for(personas.developer).post(reverse("builds:revision_create", args=[definition.pk]), {
        "context_kind": "files", "containerfile": CONTAINERFILE, "new_file_path": "../etc/passwd",
        "new_file_content": "x"})
    assert response.status_code == 400
    assert definition.revisions.count() == 1


def test_a_git_context_needs_an_allowed_url(client_for, personas, definition):
    response = client_for(personas.developer).post(reverse("builds:revision_create", args=[definition.pk]), {
        "context_kind": "git", "containerfile": CONTAINERFILE, "git_url": "--upload-pack=touch /tmp/x",
        "git_ref": "main"})
    assert response.status_code == 400


def test_the_diff_between_two_revisions_is_highlighted(client_for, personas, definition):
    services.revision_create(definition=definition, user=personas.developer,
                             containerfile=CONTAINERFILE.replace("httpd", "nginx"), message="nginx")
    page = client_for(personas.viewer).get(reverse("builds:revision_diff", args=[definition.pk]) + "?from=1&to=2")
    text = page.content.decode()
    assert page.status_code == 200
    assert 'class="del"' in text and 'class="add"' in text and "nginx" in text
    assert '<span class="k">RUN</span>' in text


def test_the_diff_of_unknown_revisions_is_404(client_for, personas, definition):
    c = client_for(personas.viewer)
    services.revision_create(definition=definition, user=personas.developer, containerfile=CONTAINERFILE + "\n")
    assert c.get(reverse("builds:revision_diff", args=[definition.pk]) + "?from=7&to=2").status_code == 404
    assert c.get(reverse("builds:revision_diff", args=[definition.pk]) + "?from=x").status_code == 404


def test_search_finds_definitions(client_for, personas, definition):
    c = client_for(personas.viewer)
    assert b"web-os" in c.get(reverse("builds:definition_list") + "?q=web").content
    assert b"web-os" not in c.get(reverse("builds:definition_list") + "?q=nothing-like-it").content


def test_the_list_shows_each_definitions_latest_build_and_its_status(client_for, personas, definition, build):
    from portal.services import run_finish

    services.definition_create(team=personas.team, user=personas.developer, name="not-built")
    run_finish(build.run, status=RunStatus.FAILED, reason="x")
    retry = services.build_retry(build=build, user=personas.developer)
    page = client_for(personas.viewer).get(reverse("builds:definition_list")).content.decode()
    assert f'href="{retry.get_absolute_url()}"' in page and 'data-build-status="queued"' in page
    assert f'href="{build.get_absolute_url()}"' not in page  # only the latest build
    assert "never built" in page  # the other definition


@pytest.mark.parametrize("url, found", [("/images/?q=%00web", True), ("/builds/?q=%C2%B2", False),
                                        ("/builds/?q=web%00", False)])
def test_odd_search_text_gets_an_answer_not_a_crash(client_for, personas, build, url, found):
    response = client_for(personas.viewer).get(url)
    assert response.status_code == 200
    assert (build.definition.get_absolute_url() in response.content.decode()) == found


# --- What changed ----------------------------------------------------------------------------------------------------


def test_what_changed_lists_packages_size_labels_and_the_containerfile_diff(client_for, personas, definition):
    old = services.build_start(revision=definition.current_revision(), user=personas.developer)
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile=CONTAINERFILE.replace("httpd", "httpd mod_ssl"))
    new = services.build_start(revision=revision, user=personas.developer)
    Build.objects.filter(pk=old.pk).update(size=1000, labels={"a": "1", "gone": "x"}, package_format="rpm",
                                           packages={"httpd": "2.4.57-5.el10", "kept": "1-1", "old": "1-1"})
    Build.objects.filter(pk=new.pk).update(size=1500, labels={"a": "2"}, package_format="rpm",
                                           packages={"httpd": "2.4.62-1.el10", "kept": "1-1", "mod_ssl": "2.4.62-1"})
    page = client_for(personas.viewer).get(reverse("builds:definition_compare", args=[definition.pk])
                                           + f"?a={old.number}&b={new.number}").content.decode()
    assert "mod_ssl" in page and "2.4.57-5.el10" in page and "2.4.62-1.el10" in page
    assert "+500" in page.replace("\xa0", " ")
    assert "gone" in page
    assert 'class="add"' in page


def test_a_build_page_is_named_by_the_number_it_shows_and_the_id_url_redirects_there(client_for, personas, definition):
    other = services.definition_create(team=personas.team, user=personas.developer, name="db-os")
    services.revision_create(definition=other, user=personas.developer, containerfile=CONTAINERFILE)
    services.build_start(revision=other.current_revision(), user=personas.developer)  # takes an id
    first = services.build_start(revision=definition.current_revision(), user=personas.developer)
    second = services.build_start(revision=definition.current_revision(), user=personas.developer)
    assert second.number == 2 and second.pk != 2
    url = f"/images/{definition.pk}/builds/2/"
    assert second.get_absolute_url() == url
    viewer = client_for(personas.viewer)
    page = viewer.get(url).content.decode()
    assert "Build 2" in page
    old = viewer.get(f"/builds/{second.pk}/")
    assert old.status_code == 301 and old["Location"] == url
    # A page still open at the old URL keeps its live refresh.
    assert viewer.get(f"/builds/{second.pk}/", HTTP_HX_REQUEST="true", HTTP_HX_TARGET="build-live").status_code == 200
    assert viewer.get(f"/images/{definition.pk}/builds/3/").status_code == 404
    assert viewer.get(f"/images/{other.pk}/builds/2/").status_code == 404

    compare = f"/images/{definition.pk}/builds/compare/?a=1&b=2"
    response = viewer.get(compare)
    assert response.status_code == 200 and "#1 → #2" in response.content.decode()
    old = viewer.get(f"/builds/compare/?a={first.pk}&b={second.pk}")
    assert old.status_code == 301 and old["Location"] == compare


def test_the_compare_links_name_the_builds_by_number(client_for, personas, definition):
    from portal.services import run_finish, run_start

    services.build_start(revision=definition.current_revision(), user=personas.developer)
    builds = [services.build_start(revision=definition.current_revision(), user=personas.developer) for _ in range(2)]
    for build in builds:
        Build.objects.filter(pk=build.pk).update(digest="sha256:" + f"{build.number}" * 64)
        run_start(build.run)
        run_finish(build.run, status=RunStatus.SUCCEEDED)
    page = client_for(personas.viewer).get(builds[1].get_absolute_url()).content.decode()
    link = f'href="/images/{definition.pk}/builds/compare/?a=2&amp;b=3"'
    assert link in page and "#2" in page


def test_compare_needs_two_visible_builds(client_for, personas, build):
    assert client_for(personas.viewer).get(reverse("builds:build_compare") + "?a=x&b=1").status_code == 404
    assert client_for(personas.outsider).get(reverse("builds:build_compare") + f"?a={build.pk}&b={build.pk}").status_code == 404


# --- Builders --------------------------------------------------------------------------------------------------------


def test_everyone_sees_builders_but_only_superusers_manage_them(client_for, personas):
    builder = Builder.objects.create(name="arm-1", kind="ssh", architecture="arm64", host="127.0.0.1",
                                     username="build", private_key="SECRET-KEY-TEXT", host_key="ssh-ed25519 AAAA")
    for user in (personas.viewer, personas.outsider, personas.helpdesk):
        page = client_for(user).get(reverse("builds:builder_list"))
        assert page.status_code == 200 and b"arm-1" in page.content and b"SECRET-KEY-TEXT" not in page.content
    dev = client_for(personas.developer)
    assert dev.get(reverse("builds:builder_create")).status_code == 403
    assert dev.post(reverse("builds:builder_toggle", args=[builder.pk])).status_code == 403
    root = client_for(personas.superuser)
    assert root.post(reverse("builds:builder_toggle", args=[builder.pk])).status_code == 302
    builder.refresh_from_db()
    assert not builder.enabled
    edit = root.get(reverse("builds:builder_edit", args=[builder.pk])).content.decode()
    assert "SECRET-KEY-TEXT" not in edit


def test_an_offline_ssh_builder_is_reported_unhealthy_fast(personas):
    import time

    from tests.helpers import free_port

    builder = Builder.objects.create(name="gone", kind="ssh", architecture="amd64", host="127.0.0.1",
                                     port=free_port(), username="build", private_key="x",
                                     host_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl")
    started = time.monotonic()
    services.builder_check_health(builder=builder)
    assert time.monotonic() - started < 5
    assert builder.health_ok is False and builder.health_detail


# --- Schedules -------------------------------------------------------------------------------------------------------


def test_a_nightly_schedule_starts_a_build_when_due_once(personas, definition):
    services.definition_update(definition=definition, user=personas.developer, schedule="daily")
    definition.refresh_from_db()
    assert definition.next_scheduled_at > timezone.now()
    assert services.builds_schedule_due() == []
    later = definition.next_scheduled_at + timedelta(minutes=1)
    started = services.builds_schedule_due(now=later)
    assert len(started) == 1 and started[0].run.trigger == "schedule"
    assert services.builds_schedule_due(now=later) == []
    definition.refresh_from_db()
    assert definition.next_scheduled_at > later


def test_revisions_are_numbered_per_definition(personas, definition):
    other = services.definition_create(team=personas.team, user=personas.developer, name="other")
    r = services.revision_create(definition=other, user=personas.developer, containerfile=CONTAINERFILE)
    assert r.number == 1 and Revision.objects.filter(definition=definition).get().number == 1


def test_the_build_list_refreshes_itself_only_while_something_runs(client_for, personas, build):
    c = client_for(personas.viewer)
    assert 'hx-trigger="every 3s"' in c.get(reverse("builds:build_list") + "?status=queued").content.decode()
    from portal.services import run_finish

    run_finish(build.run, status=RunStatus.SUCCEEDED)
    fragment = c.get(reverse("builds:build_list"), HTTP_HX_REQUEST="true", HTTP_HX_TARGET="build-list-body")
    assert fragment.status_code == 200 and 'hx-trigger="every 3s"' not in fragment.content.decode()
    assert "<html" not in fragment.content.decode()


def test_deleting_a_definition_removes_its_revisions_builds_and_their_runs(client_for, personas, build):
    from portal.models import Run
    from portal.services import run_finish

    run_finish(build.run, status=RunStatus.FAILED, reason="x")
    definition = build.definition
    response = client_for(personas.developer).post(reverse("builds:definition_delete", args=[definition.pk]))
    assert response.status_code == 302
    assert not ImageDefinition.objects.exists() and not Build.objects.exists() and not Revision.objects.exists()
    assert not Run.objects.filter(pk=build.run_id).exists()
    assert AuditEvent.objects.filter(action="definition.delete").exists()


def test_a_definition_with_an_active_build_is_not_deleted(client_for, personas, build):
    response = client_for(personas.developer).post(reverse("builds:definition_delete", args=[build.definition.pk]))
    assert response.status_code == 302
    assert ImageDefinition.objects.filter(pk=build.definition.pk).exists()
