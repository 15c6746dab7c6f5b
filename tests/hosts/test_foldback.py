"""Folding a host's runtime changes back into its image: a proposed revision of the definition that built the host's
digest, shown as a diff against the current revision, saved only when a developer of the team confirms, with what it
left out and why (secrets, machine-specific files, names that are not package names)."""

import pytest
from django.utils import timezone

from builds.models import Build, ContextKind, Revision
from hosts import foldback, runtime, services
from hosts.models import Host, HostRuntime, HostState
from hosts.simruntime import IMAGE_ETC, IMAGE_PACKAGES
from portal.models import AuditEvent
from tests.diskimages.rows import succeeded_build

pytestmark = pytest.mark.django_db

DIGEST = "sha256:" + "7" * 64


def side(text):
    return ("file", len(text.encode()), text.encode())


@pytest.fixture
def web01(personas):
    """web-01 boots a digest the portal built from web-os r1; someone installed htop and edited chrony.conf, added a
    sysctl drop-in, wrote a password into an app's config, and /etc/machine-id differs (it always does)."""
    build = succeeded_build(personas.team, personas.developer, digest=DIGEST)
    Build.objects.filter(pk=build.pk).update(package_format="rpm", packages=IMAGE_PACKAGES)
    host = Host.objects.create(team=personas.team, name="web-01", address="192.0.2.10", host_key="ssh-ed25519 AAAA",
                               state=HostState.UP_TO_DATE, is_bootc=True, booted_digest=DIGEST,
                               status_at=timezone.now())
    chrony = IMAGE_ETC["chrony.conf"].replace("0.fedora.pool.ntp.org", "ntp.example.com")
    files = {"/etc/chrony.conf": ("M", side(IMAGE_ETC["chrony.conf"]), side(chrony)),
             "/etc/sysctl.d/90-tuning.conf": ("A", None, side("vm.swappiness = 10\n")),
             "/etc/app/db.conf": ("A", None, side("password = S3cret\n")),
             "/etc/machine-id": ("M", side("a\n"), side("b\n"))}
    rpm = "#format rpm\n" + "".join(f"{n}\t{v}\tx86_64\n" for n, v in {**IMAGE_PACKAGES, "htop": "3.3-1"}.items())
    runtime.runtime_record(host, package_output=rpm, files=files, config_diff="M    chrony.conf\nA    app/db.conf\n"
                           "A    sysctl.d/90-tuning.conf\nM    machine-id\nM    shadow\nD    motd\n")
    return host


def test_the_proposal_installs_the_packages_copies_the_files_and_says_what_it_left_out(personas, web01):
    definition, current, proposal = services.runtime_proposal(host=web01, user=personas.developer)
    assert current.number == 1 and definition.name == "web-os"
    assert proposal.containerfile == (
        "FROM scratch\n\n# Folded back from what changed on web-01 since it booted its image.\n"
        "RUN dnf -y install htop\n"
        'COPY ["etc/chrony.conf", "/etc/chrony.conf"]\n'
        'COPY ["etc/sysctl.d/90-tuning.conf", "/etc/sysctl.d/90-tuning.conf"]\n'
        "RUN rm -f -- /etc/motd\n")
    assert proposal.context_kind == ContextKind.FILES
    assert proposal.context_files["etc/sysctl.d/90-tuning.conf"] == b"vm.swappiness = 10\n"
    assert b"ntp.example.com" in proposal.context_files["etc/chrony.conf"]
    left_out = dict(proposal.left_out)
    assert "looks like a secret" in left_out["/etc/app/db.conf"]
    assert left_out["/etc/machine-id"] == "belongs to this one machine"
    assert left_out["/etc/shadow"] == "holds secrets only; never read"


def test_package_names_that_would_inject_shell_are_left_out_and_others_quoted(personas, web01):
    HostRuntime.objects.filter(host=web01).update(packages_added={"htop": "1", "x; rm -rf /": "1", "$(id)": "1",
                                                                  "libstdc++": "1"})
    _, _, proposal = services.runtime_proposal(host=web01, user=personas.developer)
    assert "RUN dnf -y install htop libstdc++\n" in proposal.containerfile
    assert "rm -rf /" not in proposal.containerfile.split("/etc/motd")[0] and "$(id)" not in proposal.containerfile
    assert dict(proposal.left_out)["package 'x; rm -rf /'"] == "not a package name: it could inject shell"
    assert foldback.propose(HostRuntime.objects.get(host=web01), host_name="h", containerfile="FROM x\n",
                            context_kind=ContextKind.NONE, context_files={},
                            package_format="dpkg").containerfile.count("apt-get install -y --no-install-recommends htop")


def test_a_definition_built_from_git_gets_the_packages_and_not_the_files(personas, web01):
    runtime_row = HostRuntime.objects.get(host=web01)
    proposal = foldback.propose(runtime_row, host_name="web-01", containerfile="FROM x\n",
                                context_kind=ContextKind.GIT, context_files={})
    assert "RUN dnf -y install htop" in proposal.containerfile and "COPY" not in proposal.containerfile
    assert "git repository" in dict(proposal.left_out)["/etc/chrony.conf"]
    assert proposal.context_kind == ContextKind.GIT and proposal.context_files == {}


def test_only_the_teams_developers_see_and_save_the_proposal(personas, client_for, web01):
    url = f"/hosts/{web01.pk}/runtime/propose/"
    assert client_for(None).get(url).status_code == 302  # to the login page
    assert client_for(personas.outsider).get(url).status_code == 404
    for user in (personas.helpdesk, personas.viewer, personas.operator):
        assert client_for(user).get(url).status_code == 403, user
        assert client_for(user).post(url, {"reviewed": "x"}).status_code == 403, user
    assert "Propose a revision" not in client_for(personas.operator).get(f"/hosts/{web01.pk}/").content.decode()
    assert "Propose a revision" in client_for(personas.developer).get(f"/hosts/{web01.pk}/").content.decode()

    page = client_for(personas.developer).get(url)
    body = page.content.decode()
    assert page.status_code == 200 and "Save revision r2" in body and "installing htop" in body
    assert [row.new for row in page.context["rows"] if row.kind == "add"] == [3, 4, 5, 6, 7, 8]  # appended lines
    assert "etc/sysctl.d/90-tuning.conf" in body and "S3cret" not in body
    assert Revision.objects.count() == 1  # looking saves nothing

    stale = client_for(personas.developer).post(url, {"reviewed": "0" * 64})
    assert "review it again" in stale.content.decode() and Revision.objects.count() == 1
    saved = client_for(personas.developer).post(url, {"reviewed": page.context["reviewed"]})
    revision = Revision.objects.get(number=2)
    assert saved.status_code == 302 and saved["Location"] == revision.get_absolute_url()
    assert revision.containerfile.endswith("RUN rm -f -- /etc/motd\n") and revision.author == personas.developer
    assert revision.context_kind == ContextKind.FILES
    assert sorted(f.path for f in revision.context_files.all()) == ["etc/chrony.conf", "etc/sysctl.d/90-tuning.conf"]
    assert AuditEvent.objects.filter(action="revision.create", object_id=str(revision.pk)).exists()


def test_a_host_whose_image_the_portal_did_not_build_gets_a_reason_not_an_error(personas, client_for):
    host = Host.objects.create(team=personas.team, name="db-01", address="192.0.2.11", booted_digest="sha256:" + "9" * 64)
    response = client_for(personas.developer).get(f"/hosts/{host.pk}/runtime/propose/")
    assert response.status_code == 200 and "did not build the image db-01 boots" in response.content.decode()
    assert client_for(personas.developer).post(f"/hosts/{host.pk}/runtime/propose/").status_code == 200


@pytest.mark.slow
def test_the_saved_proposal_builds_for_real(personas, client_for, oci_registry, local_builder, build_settings):
    """web-os r1 on the busybox base, with a `dnf` stand-in (no rpm repository is reachable here) that records what it
    is asked to install; the folded-back r2 builds with podman, and its image has the host's files and not motd."""
    from builds import pipeline
    from builds import services as build_services
    from builds.models import BuildStatus
    from tests.builds.fixtures import BASE_IMAGE

    definition = build_services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    r1 = build_services.revision_create(
        definition=definition, user=personas.developer, context_kind=ContextKind.FILES,
        context_files={"dnf": b"#!/bin/sh\n[ \"$1 $2\" = '-y install' ] && shift 2 && echo \"$@\" >> /dnf-installed\n"},
        containerfile=f"FROM {BASE_IMAGE}\nCOPY dnf /usr/bin/dnf\nRUN chmod +x /usr/bin/dnf && echo Welcome > /etc/motd\n"
                      "LABEL containers.bootc=1\n")
    build = build_services.build_start(revision=r1, user=personas.developer)
    Build.objects.filter(pk=build.pk).update(digest=DIGEST, package_format="rpm", packages=IMAGE_PACKAGES)
    host = Host.objects.create(team=personas.team, name="web-01", address="192.0.2.10", booted_digest=DIGEST,
                               state=HostState.UP_TO_DATE, is_bootc=True)
    rpm = "#format rpm\n" + "".join(f"{n}\t{v}\tx86_64\n" for n, v in {**IMAGE_PACKAGES, "htop": "3.3-1"}.items())
    runtime.runtime_record(host, config_diff="A    sysctl.d/90-tuning.conf\nD    motd\n", package_output=rpm,
                           files={"/etc/sysctl.d/90-tuning.conf": ("A", None, side("vm.swappiness = 10\n"))})

    url = f"/hosts/{host.pk}/runtime/propose/"
    reviewed = client_for(personas.developer).get(url).context["reviewed"]
    assert client_for(personas.developer).post(url, {"reviewed": reviewed}).status_code == 302
    r2 = definition.revisions.get(number=2)
    r2_checked = build_services.revision_create(
        definition=definition, user=personas.developer, context_kind=ContextKind.FILES,
        context_files={f.path: bytes(f.content) for f in r2.context_files.all()},
        containerfile=r2.containerfile + "RUN grep -qx htop /dnf-installed && grep -qx 'vm.swappiness = 10' "
                                         "/etc/sysctl.d/90-tuning.conf && ! test -e /etc/motd\n")
    for revision in (r2, r2_checked):
        built = build_services.build_start(revision=revision, user=personas.developer)
        assert pipeline.build_execute(built.pk) is None
        built = Build.objects.with_related().get(pk=built.pk)
        assert built.status == BuildStatus.SUCCEEDED, built.run.exit_reason
