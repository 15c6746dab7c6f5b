"""A build reads only its own context, and podman never sees the portal's own files.

The attack: a developer commits a symbolic link (`image -> /`, `motd -> /app/.env`) and podman follows it, so COPY puts
the worker's keys into the log or the pushed image. `builds.buildcontext` refuses such a context before podman starts;
the local runner (`builds.runner.LocalRunner`) also runs every command in a mount namespace in which the portal's
directories are empty, so even a link that got through would find nothing. Real builds here: git, podman (runc, its
own store), a busybox base, docker-registry on loopback; remote builders over a real sshd.
"""

import os
import subprocess
import uuid
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from hypothesis import assume, given
from hypothesis import strategies as st

from builds import buildcontext, pipeline, services
from builds.buildcontext import ContextRefused, Entry
from builds.models import Build, Builder, BuildStatus, ContextKind, Revision
from builds.runner import LocalRunner, Watch, hidden_paths
from portal.logsink import lines_after
from tests.builds.fixtures import BASE_IMAGE

# --- The check itself ------------------------------------------------------------------------------------------------


def link(path, target):
    return Entry("l", path, target)


@pytest.mark.parametrize(("entries", "subdir", "context"), [
    ([], "", ""),
    ([link("a", "b"), link("etc/localtime", "../usr/zone")], "", ""),
    ([link("image", "src/image")], "image", "src/image"),
    ([link("image/x", "../image/y")], "image", "image"),
    ([link("d", "sub"), link("sub/e", "../f")], "", ""),
    ([link("image/a", "./b/../c")], "image", "image"),
])
def test_links_that_stay_inside_the_context_are_kept(entries, subdir, context):
    assert buildcontext.check(entries, subdir) == context


@pytest.mark.parametrize(("entries", "subdir", "says"), [
    ([link("motd", "/app/.env")], "", "motd -> /app/.env points outside the build context"),
    ([link("motd", "../../../etc/shadow")], "", "motd -> ../../../etc/shadow points outside"),
    ([link("a", "b"), link("b", "../x")], "", "a -> b points outside"),
    ([link("image/motd", "../secret")], "image", "image/motd -> ../secret points outside the build context"),
    ([link("d", ".."), link("e", "d/d/x")], "", "d -> .. points outside"),
    ([link("a", "b"), link("b", "a")], "", "a -> b is a loop of symbolic links"),
    ([Entry("p", "fifo")], "", "fifo is a named pipe"),
    ([Entry("c", "dev/null")], "", "dev/null is a character device"),
])
def test_a_link_leading_outside_or_a_special_file_refuses_the_context(entries, subdir, says):
    with pytest.raises(ContextRefused) as refused:
        buildcontext.check(entries, subdir)
    assert says in str(refused.value) and "RUN ln -s" in str(refused.value)


@pytest.mark.parametrize(("entries", "subdir", "says"), [
    ([link("image", "/")], "image", "The sub-directory image leads outside the repository: image is a symbolic link "
                                    "to /."),
    ([link("image", "../..")], "image/etc", "image is a symbolic link to ../.."),
    ([link("a", "b"), link("b", "/etc")], "a", "a is a symbolic link to b"),
    ([link("x", "x")], "x", "leads outside the repository"),
])
def test_a_sub_directory_that_leads_outside_the_repository_is_refused(entries, subdir, says):
    with pytest.raises(ContextRefused, match="sub-directory") as refused:
        buildcontext.check(entries, subdir)
    assert says in str(refused.value)


def test_many_bad_links_are_counted_not_all_listed():
    entries = [link(f"l{i:02}", "/etc") for i in range(12)]
    with pytest.raises(ContextRefused) as refused:
        buildcontext.check(entries)
    assert "l00 -> /etc" in str(refused.value) and "and 7 more" in str(refused.value)


def test_the_listing_keeps_names_with_any_bytes():
    data = b"l\0we\nird\rname\0/etc/pass\xffwd\0p\0pipe\0\0"
    assert buildcontext.parse_listing(data) == [Entry("l", "we\nird\rname", "/etc/pass\udcffwd"), Entry("p", "pipe", "")]


names = st.sampled_from(["a", "b", "c", "..", ".", "d/e"])


@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d/e", "a/b"]),
                          st.lists(names, min_size=1, max_size=4).map("/".join)), max_size=6))
def test_whatever_the_links_the_check_accepts_only_what_resolves_inside(pairs):
    """Property: when the check accepts a tree, every link in it resolves (on a real file system, with the kernel's
    rules) to a place inside the tree."""
    import tempfile

    links = dict(pairs)
    # A tree cannot hold a link and something under it (a/b with a a link): such pairs are not trees.
    assume(not any(other.startswith(path + "/") for path in links for other in links))
    entries = [link(path, target) for path, target in links.items()]
    try:
        buildcontext.check(entries)
    except ContextRefused:
        return
    with tempfile.TemporaryDirectory() as outer:
        root = Path(outer) / "root"
        root.mkdir()
        for path, target in links.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, root / path)
        for path in links:
            resolved = Path(os.path.realpath(root / path))
            assert resolved == root or root in resolved.parents, (path, links)


# --- Real builds -----------------------------------------------------------------------------------------------------

SECRET = f"worker-secret-{uuid.uuid4().hex}"


@pytest.fixture
def planted(tmp_path):
    """A file outside any checkout holding a secret only the worker has."""
    path = tmp_path / "outside" / "worker.env"
    path.parent.mkdir()
    path.write_text(f"SECRET_KEY={SECRET}\n")
    return path


def git_repository(tmp_path, files: dict[str, str], links: dict[str, str]):
    """A bare repository with one commit of `files` and symbolic `links` (path -> target), as a developer pushes it."""
    work, bare = tmp_path / "work", tmp_path / "repo.git"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    for path, text in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    for path, target in links.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, work / path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(work)]
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return f"file://{bare}"


@pytest.fixture
def definition(personas, oci_registry, local_builder, build_settings):
    return services.definition_create(team=personas.team, user=personas.developer, name="web-os")


def build_now(revision, user):
    build = services.build_start(revision=revision, user=user)
    assert pipeline.build_execute(build.pk) is None
    return Build.objects.with_related().get(pk=build.pk)


def log_text(build):
    return "\n".join(text for _, text in lines_after(build.run))


def database_text():
    out = StringIO()
    call_command("dumpdata", "--natural-foreign", stdout=out)
    return out.getvalue()


def images(podman_store):
    return podman_store.run("images", "--all", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}").stdout


# A bind mount of a context path follows a link on the builder's own file system (COPY resolves it inside the
# context): without the check this prints the linked file, as test_podman_itself_finds_nothing... shows.
READ_THROUGH_LINK = f"FROM {BASE_IMAGE}\nRUN --mount=type=bind,source=motd,target=/m cat /m\n"


@pytest.mark.slow
def test_a_committed_link_to_a_file_outside_is_refused_before_podman_starts(definition, personas, tmp_path, planted,
                                                                            podman_store):
    url = git_repository(tmp_path, {"image/README": "docs\n"}, {"image/motd": str(planted)})
    revision = services.revision_create(definition=definition, user=personas.developer, context_kind=ContextKind.GIT,
                                        git_url=url, git_ref="main", git_subdir="image", containerfile=READ_THROUGH_LINK)
    before = images(podman_store)
    build = build_now(revision, personas.developer)

    assert build.status == BuildStatus.FAILED
    assert build.run.exit_reason.startswith("Refused before podman started: The build context holds what a build may "
                                            f"not read: image/motd -> {planted} points outside the build context.")
    log = log_text(build)
    assert "Checked out" in log and "STEP" not in log and "$ podman" not in log
    assert not build.image_id and not build.digest
    assert images(podman_store) == before
    for text in (log, build.run.exit_reason, database_text()):
        assert SECRET not in text


@pytest.mark.slow
def test_a_sub_directory_that_is_a_link_to_the_root_is_refused(definition, personas, tmp_path, podman_store):
    url = git_repository(tmp_path, {"README": "x\n"}, {"image": "/"})
    revision = services.revision_create(
        definition=definition, user=personas.developer, context_kind=ContextKind.GIT, git_url=url, git_ref="main",
        git_subdir="image", containerfile=f"FROM {BASE_IMAGE}\nCOPY etc/hostname /x\nRUN cat /x\n")
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.FAILED
    assert "The sub-directory image leads outside the repository: image is a symbolic link to /." in \
        build.run.exit_reason
    assert "STEP" not in log_text(build)


@pytest.mark.slow
def test_links_inside_the_checkout_stay_links_and_build(definition, personas, tmp_path):
    url = git_repository(tmp_path, {"src/image/motd.real": "from inside\n"},
                         {"image": "src/image", "src/image/motd": "motd.real"})
    revision = services.revision_create(
        definition=definition, user=personas.developer, context_kind=ContextKind.GIT, git_url=url, git_ref="main",
        git_subdir="image", containerfile=f"FROM {BASE_IMAGE}\nCOPY . /src\n"
                                          "RUN test -L /src/motd && grep -q 'from inside' /src/motd && echo link-kept\n")
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason + log_text(build)
    assert "link-kept" in log_text(build)


@pytest.mark.slow
def test_uploaded_context_files_go_through_the_same_check(definition, personas):
    revision = services.revision_create(
        definition=definition, user=personas.developer, context_kind=ContextKind.FILES,
        context_files={"etc/motd": b"uploaded\n"}, containerfile=f"FROM {BASE_IMAGE}\nCOPY etc/motd /etc/motd\n")
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.SUCCEEDED, build.run.exit_reason
    assert "Checked the build context: only files, directories and links that stay inside it" in log_text(build)


@pytest.mark.slow
def test_a_remote_builder_refuses_the_same_link(personas, oci_registry, sshd, podman_store, build_settings,
                                                tmp_path, planted):
    from builds.services import local_architecture

    Builder.objects.create(name="remote-1", kind="ssh", architecture=local_architecture(), host="127.0.0.1",
                           port=sshd.port, username="root", private_key=sshd.private_key, host_key=sshd.host_key,
                           podman_root=podman_store.root, podman_runroot=podman_store.runroot)
    definition = services.definition_create(team=personas.team, user=personas.developer, name="remote-os")
    url = git_repository(tmp_path, {}, {"motd": str(planted)})
    revision = services.revision_create(definition=definition, user=personas.developer, context_kind=ContextKind.GIT,
                                        git_url=url, git_ref="main", containerfile=READ_THROUGH_LINK)
    build = build_now(revision, personas.developer)
    assert build.builder.kind == "ssh"
    assert build.status == BuildStatus.FAILED
    assert f"motd -> {planted} points outside the build context" in build.run.exit_reason
    assert "STEP" not in log_text(build) and SECRET not in log_text(build)


# --- podman cannot see the portal's files ----------------------------------------------------------------------------


@pytest.fixture
def portal_secret():
    """A secret planted in the portal's own var/, as dev-secrets.json and the SQLite database are."""
    path = Path(settings.VAR_DIR) / f"planted-{uuid.uuid4().hex}.json"
    path.write_text(f'{{"SECRET_KEY": "{SECRET}"}}')
    yield path
    path.unlink()


def run(argv, **kwargs):
    return LocalRunner().run(argv, watch=Watch(run=None, sink=None, deadline=None), capture=True, **kwargs)


def test_the_portals_code_var_and_media_are_hidden(settings):
    from builds.runner import _inside

    settings.BUILD_HIDDEN_PATHS = ["/nonexistent/extra"]
    hidden = hidden_paths()
    for path in (settings.BASE_DIR, settings.VAR_DIR, settings.MEDIA_ROOT, settings.BASE_DIR / ".env",
                 "/nonexistent/extra"):
        assert _inside(str(path), hidden), path
    assert all(_inside(p, [q for q in hidden if q != p]) is None for p in hidden), "nested paths are covered already"


def test_commands_of_a_local_builder_see_an_empty_var_and_code_directory(portal_secret):
    from builds.runner import CommandFailed

    with pytest.raises(CommandFailed) as failed:
        run(["cat", str(portal_secret)])
    assert "No such file or directory" in " ".join(failed.value.output_tail)
    assert run(["ls", "-A", str(settings.BASE_DIR)]).stdout == ""
    assert portal_secret.exists()  # the worker itself still has it


def test_commands_of_a_local_builder_get_none_of_the_portals_settings(monkeypatch):
    monkeypatch.setenv("FIELD_ENCRYPTION_KEYS", SECRET)
    monkeypatch.setenv("CONTAINERS_CONF", "/etc/containers/containers.conf")
    environment = run(["env"]).stdout
    assert SECRET not in environment and "DATABASE_URL" not in environment
    assert "CONTAINERS_CONF=/etc/containers/containers.conf" in environment and "PATH=" in environment


def test_a_work_directory_inside_the_portals_files_makes_the_builder_unavailable():
    from builds.runner import BuilderUnavailable

    runner = LocalRunner(work_dir=str(Path(settings.VAR_DIR) / "builds"))
    with pytest.raises(BuilderUnavailable, match="which builds must not see"):
        runner.run(["true"], watch=Watch(run=None, sink=None, deadline=None))


@pytest.mark.slow
def test_podman_itself_finds_nothing_of_the_portal_even_past_the_check(podman_store, portal_secret, tmp_path):
    """Defence in depth: a context whose link the check would refuse, handed straight to podman by the runner."""
    from builds import podman
    from builds.runner import CommandFailed

    context = tmp_path / "context"
    context.mkdir()
    os.symlink(portal_secret, context / "motd")
    (tmp_path / "Containerfile").write_text(READ_THROUGH_LINK)
    builder = Builder(name="x", podman_root=podman_store.root, podman_runroot=podman_store.runroot)
    argv = podman.build_args(builder, containerfile=str(tmp_path / "Containerfile"), context=str(context), tags=[],
                             labels={}, build_args={}, platform="linux/amd64", iidfile=str(tmp_path / "iid"),
                             pull="never")
    with pytest.raises(CommandFailed) as failed:
        LocalRunner().run(argv, watch=Watch(run=None, sink=None, deadline=None))
    assert SECRET not in "\n".join(failed.value.output_tail)
    # Without the namespace podman would have read it: the same command, run directly, does.
    direct = subprocess.run(argv, capture_output=True, text=True)
    assert SECRET in direct.stdout + direct.stderr


@pytest.mark.slow
def test_a_git_remote_inside_the_portals_files_cannot_be_cloned(definition, personas, settings):
    """file:// remotes exist for development; even then the portal's own repository is out of a build's reach."""
    revision = services.revision_create(definition=definition, user=personas.developer, context_kind=ContextKind.GIT,
                                        git_url=f"file://{settings.BASE_DIR}", git_ref="HEAD",
                                        containerfile=f"FROM {BASE_IMAGE}\nCOPY . /src\n")
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.FAILED
    assert "does not appear to be a git repository" in log_text(build) or "not found" in log_text(build)


@pytest.mark.slow
def test_copy_from_a_path_on_the_worker_reads_nothing(definition, personas, portal_secret, planted):
    """Validation refuses COPY --from=<path> on save; a row written past it still builds nothing from the worker."""
    text = f"FROM {BASE_IMAGE}\nCOPY --from={planted.parent} worker.env /x\nRUN cat /x\n"
    revision = Revision.objects.create(definition=definition, number=1, containerfile=text,
                                       sha256=Revision.hash_text(text))
    build = build_now(revision, personas.developer)
    assert build.status == BuildStatus.FAILED
    assert "no stage or image found" in log_text(build)
    assert SECRET not in log_text(build) and SECRET not in database_text()
