"""A portal with something on every page, and the pages each persona uses most: what the browser sweeps (the
Content-Security-Policy in tests/portal/test_csp.py, accessibility in tests/portal/test_accessibility.py) load."""

from django.utils import timezone

from builds import services
from builds.releases import services as promotions
from builds.releases.models import StageHistory
from hosts.models import Host, HostSnapshot, HostState
from portal import logsink
from portal.models import Run, RunStatus
from tests.diskimages.rows import finished_conversion, succeeded_build

BOLD, TRUECOLOR, RED, ITALIC_UNDERLINE, PALETTE_BG, RESET = (
    "\x1b[1m", "\x1b[38;2;255;100;0m", "\x1b[31m", "\x1b[3;4m", "\x1b[48;5;200m", "\x1b[0m")


def a_portal_with_something_on_every_page(personas):
    """Rows for each page to show: builds (one with a coloured log), a disk image, a promotion waiting for approval,
    a host with a status and a snapshot. Returns the ids the page list needs."""
    team, developer = personas.team, personas.developer
    build = succeeded_build(team, developer)
    with logsink.LogSink(build.run, publish=False) as sink:
        sink.write("STEP 1/2: FROM scratch")
        sink.write(f"{BOLD}bold{RESET} {TRUECOLOR}orange{RESET} {RED}red{RESET} {ITALIC_UNDERLINE}slanted{RESET} "
                   f"{PALETTE_BG}pink{RESET}")
    second = succeeded_build(team, developer, name="db-os", digest="sha256:" + "cd" * 32)
    StageHistory.objects.create(stage=team.stages.get(name="dev"), definition=second.definition,
                                digest=second.digest, build=second)
    promotion = promotions.promotion_request(definition=second.definition, build=second,
                                             target_stage=team.stages.get(name="test"), user=developer,
                                             reason="ready for test")
    disk_image = finished_conversion(build, developer)
    host = Host.objects.create(team=team, name="web-01", address="192.0.2.10", port=22, host_key="ssh-ed25519 AAAA",
                               state=HostState.UP_TO_DATE, is_bootc=True, booted_digest=build.digest,
                               booted_version="1.0", status_at=timezone.now(),
                               status={"booted": {"image": {"image": "r/x:prod", "digest": build.digest,
                                                            "version": "1.0"}}})
    HostSnapshot.objects.create(host=host, raw='{"kind": "BootcHost"}', status_hash="a" * 64)
    failed = services.build_start(revision=build.revision, user=developer)
    Run.objects.filter(pk=failed.run_id).update(status=RunStatus.FAILED, exit_reason="podman build failed")
    return {"definition": build.definition_id, "build": build.pk, "run": build.run_id, "failed": failed.pk,
            "promotion": promotion.pk, "disk_image": disk_image.pk, "host": host.pk,
            "stage": team.stages.get(name="prod").pk}


def pages(ids):
    """{persona: [paths]}: the pages each persona uses most."""
    d, b, h = ids["definition"], ids["build"], ids["host"]
    return {
        None: ["/login/"],
        "developer": ["/", "/images/", f"/images/{d}/", f"/images/{d}/revisions/1/", f"/images/{d}/revisions/new/",
                      f"/images/{d}/edit/", "/builds/", f"/builds/{b}/", f"/builds/{ids['failed']}/",
                      f"/runs/{ids['run']}/", "/disk-images/", f"/disk-images/{ids['disk_image']}/",
                      "/disk-images/new/", "/disk-images/configurations/", "/disk-images/configurations/new/",
                      "/kickstarts/new/", "/promotions/", f"/promotions/{ids['promotion']}/", "/promotions/new/",
                      "/stages/", "/hosts/", "/audit/", "/teams/", "/account/two-factor/", "/password/"],
        "approver": ["/", f"/promotions/{ids['promotion']}/", f"/stages/{ids['stage']}/"],
        "operator": [f"/hosts/{h}/", f"/hosts/{h}/raw/", f"/hosts/{h}/actions/reboot/", "/hosts/drift/",
                     "/hosts/fleet/"],
        "viewer": ["/", f"/builds/{b}/", f"/runs/{ids['run']}/"],
        "helpdesk": ["/", "/hosts/", f"/hosts/{h}/"],
        "admin": ["/teams/platform/", "/teams/platform/integrations/", "/teams/platform/notifications/",
                  "/teams/platform/disk-images/", "/teams/platform/approver-groups/", f"/stages/{ids['stage']}/policy/",
                  "/hosts/new/", "/hosts/import/", "/teams/platform/ssh-key/", "/builders/"],
        "root": ["/admin/", "/admin/portal/team/", "/admin/portal/team/add/", "/admin/hosts/host/"],
        "outsider": ["/", "/images/", "/no-such-page/"],
    }
