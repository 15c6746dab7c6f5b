"""The demo's image, for `make run`: the definition "web-os" of the demo team, built, pushed and promoted for real.

`definition_ensure` writes the definition and its two revisions (fast, in `seed_demo`). `advance` does the next step
towards the demo state and says whether there is more to do; the `portal.demo.tasks.demo_advance` task calls it until it is
done, so the slow parts (importing the base image, the builds, the promotions) run in the worker while the web is up:

1. the base image: a busybox root file system imported into the builder's podman storage as `DEMO_BASE`, a local name
   shaped like a bootc base (it never shadows a real one);
2. a build of each revision (real podman builds, pushed to the registry `make run` starts, with their live logs);
3. r1 promoted to dev (no approval needed), then to test (requested by `developer`, approved by `approver`);
4. r2 promoted to dev, then asked for test: that request waits in the approver's inbox;
5. "web-os-10", the same service on the next major release (a stream10 base), built and promoted to dev;
6. (`nine_to_ten`) once the simulated fleet follows dev, the operator rolls dev's hosts from web-os 9 over to web-os 10
   (`bootc switch`, the canary first, each host's deployment pinned as a fallback) and pauses the rollout after the
   canary, to check the new release: the rollout page shows it mid-way, and Resume takes it to the end.

Every step looks at what exists first, so running it again (or after a restart) changes nothing that is already
there. Without podman, skopeo or busybox the builds are skipped with a note (`missing_tools`).
"""

import shutil
import subprocess
import tempfile
from pathlib import Path

from django.db import transaction

from builds import podman, services
from builds.models import Build, ImageDefinition
from builds.releases import services as promotions
from builds.releases.models import Promotion, PromotionStatus, StageHistory
from hosts.rollouts import services as rollouts
from hosts.rollouts.models import Rollout, RolloutStatus
from portal.models import AuditEvent, Team, User

DEMO_TEAM_SLUG = "platform"
DEMO_DEFINITION = "web-os"
DEMO_DEFINITION_10 = "web-os-10"
DEMO_BASE = "localhost/centos-bootc/centos-bootc:stream9"
DEMO_BASE_10 = "localhost/centos-bootc/centos-bootc:stream10"
TOOLS = ("podman", "skopeo", "busybox", "tar")
READY = "the demo is ready"

CONTAINERFILE_1 = f"""\
# The demo's base: make run imports a busybox root file system under this name (a stand-in for
# quay.io/centos-bootc/centos-bootc:stream9, which cannot be pulled here).
FROM {DEMO_BASE}
RUN mkdir -p /etc/web-os && echo "web-os 1.0" > /etc/web-os/release
RUN for step in config units firewall; do echo "configuring $step"; sleep 1; done
LABEL containers.bootc=1 org.opencontainers.image.version="1.0" org.opencontainers.image.title="web-os"
"""

CONTAINERFILE_2 = CONTAINERFILE_1.replace('"web-os 1.0"', '"web-os 1.1"').replace(
    'image.version="1.0"', 'image.version="1.1"').replace(
    "RUN for step", 'RUN echo "Listen 8080" > /etc/web-os/httpd.conf\nRUN for step')

REVISIONS = [(CONTAINERFILE_1, "web-os 1.0: the first image"), (CONTAINERFILE_2, "web-os 1.1: serve on 8080")]
VERSIONS = ("1.0", "1.1")

CONTAINERFILE_10 = f"""\
# web-os on the next major release: the same service on a stream10 base (make run imports a busybox root file system
# under this name, a stand-in for quay.io/centos-bootc/centos-bootc:stream10). Hosts move to it with `bootc switch`.
FROM {DEMO_BASE_10}
RUN mkdir -p /etc/web-os && echo "web-os 10.0" > /etc/web-os/release && echo "Listen 8080" > /etc/web-os/httpd.conf
RUN for step in config units firewall; do echo "configuring $step"; sleep 1; done
LABEL containers.bootc=1 org.opencontainers.image.version="10.0" org.opencontainers.image.title="web-os-10"
"""


def missing_tools():
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def demo_team():
    return Team.objects.filter(slug=DEMO_TEAM_SLUG).first()


def definition_ensure(team, user):
    """The definition "web-os" of `team` with its two revisions; returns it. Changes nothing that exists."""
    definition = ImageDefinition.objects.filter(team=team, name=DEMO_DEFINITION).first()
    if definition is None:
        definition = services.definition_create(
            team=team, user=user, name=DEMO_DEFINITION,
            description="The demo's web server image: two revisions, built and promoted by make run.")
    for number, (containerfile, message) in enumerate(REVISIONS, start=1):
        if not definition.revisions.filter(number__gte=number).exists():
            services.revision_create(definition=definition, user=user, containerfile=containerfile, message=message)
    return definition


def definition_10_ensure(team, user):
    """The definition "web-os-10" of `team` with its one revision; returns it. Changes nothing that exists."""
    definition = ImageDefinition.objects.filter(team=team, name=DEMO_DEFINITION_10).first()
    if definition is None:
        definition = services.definition_create(
            team=team, user=user, name=DEMO_DEFINITION_10,
            description="web-os on the next major release (stream10): make run's hosts switch to it in a rollout.")
    if not definition.revisions.exists():
        services.revision_create(definition=definition, user=user, containerfile=CONTAINERFILE_10,
                                 message="web-os 10.0: the service on the next major release")
    return definition


def import_busybox_base(podman_argv, tag):
    """Import a busybox root file system (busybox and its applet links, /etc/passwd and /etc/group: about 2 MB) into
    podman's storage as `tag`. `podman_argv` is podman with its global options (`podman --root R ...`)."""
    busybox = shutil.which("busybox")
    with tempfile.TemporaryDirectory(prefix="portal-base-") as directory:
        rootfs = Path(directory) / "rootfs"
        for path in ("bin", "etc", "tmp"):
            (rootfs / path).mkdir(parents=True)
        shutil.copy2(busybox, rootfs / "bin" / "busybox")
        applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
        for applet in applets:
            if applet != "busybox":
                (rootfs / "bin" / applet).symlink_to("busybox")
        (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (rootfs / "etc" / "group").write_text("root:x:0:\n")
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        try:
            subprocess.run([*podman_argv, "import", "--change", 'CMD ["/bin/sh"]', "-", tag], stdin=tar.stdout,
                           check=True, capture_output=True, timeout=120)
        finally:
            tar.stdout.close()
            tar.wait()


def base_ensure():
    """The demo bases (the stream9 and stream10 stand-ins) in the local builder's storage (imported once each)."""
    builder = services.builder_ensure_local()
    argv = podman.global_args(builder)
    for base in (DEMO_BASE, DEMO_BASE_10):
        exists = subprocess.run([*podman.image_exists_args(builder, base)], capture_output=True, timeout=60)
        if exists.returncode != 0:
            import_busybox_base(argv, base)


def _people(team):
    developer = User.objects.filter(username="developer", memberships__team=team).first()
    approver = User.objects.filter(username="approver", memberships__team=team).first()
    return developer, approver


def _latest(definition, stage, digest):
    return Promotion.objects.filter(definition=definition, target_stage=stage, digest=digest).order_by("-pk").first()


def advance():
    """One step towards the demo state. Returns (done, what happened); `done` is True when nothing is left to do or
    nothing more can be done (a build failed: its page says why)."""
    team = demo_team()
    if team is None:
        return True, "no demo team: run manage.py seed_demo"
    developer, approver = _people(team)
    definition = definition_ensure(team, developer)
    ten = definition_10_ensure(team, developer)
    revisions = list(definition.revisions.order_by("number")[:2]) + list(ten.revisions.order_by("number")[:1])
    builds = []
    for revision in revisions:
        # The demo's own build of each revision is its first: later builds (someone pressing Build) are theirs.
        build = Build.objects.with_related().filter(revision=revision).order_by("number").first()
        if build is None:
            base_ensure()
            build = services.build_start(revision=revision, user=developer, trigger="button")
        builds.append(build)
    if any(build.is_active for build in builds):
        return False, "building"
    failed = [build for build in builds if not build.succeeded]
    if failed:
        return True, f"{failed[0]} did not succeed: {failed[0].run.exit_reason[:200]}"
    first, second, tenth = builds
    dev, test = team.stages.get(name="dev"), team.stages.get(name="test")
    plan = [(first, dev, None), (first, test, approver), (second, dev, None), (second, test, "wait"), (tenth, dev, None)]
    for build, stage, approve in plan:
        # A step is done once its promotion exists and is no longer on its way: applied, or decided otherwise by
        # someone playing with the demo (a rejection or a rollback is theirs to keep: nothing is asked again).
        promotion = _latest(build.definition, stage, build.digest)
        if promotion is None:
            with transaction.atomic():
                promotion = promotions.promotion_request(
                    definition=build.definition, target_stage=stage, user=developer, build=build,
                    reason=f"{build.revision.message or build}: ready for {stage.name} (make run's demo).")
        if approve == "wait":
            continue
        if promotion.status == PromotionStatus.PENDING and approve is not None:
            promotions.promotion_approve(promotion=promotion, user=approve, digest=promotion.digest,
                                         comment="Checked against the demo's test plan.")
            return False, f"approved {build} for {stage.name}"
        if promotion.status in (PromotionStatus.PENDING, PromotionStatus.APPROVED, PromotionStatus.APPLYING):
            return False, f"promoting {build} to {stage.name}"
    return True, READY


def nine_to_ten():
    """The demo's major upgrade, once `advance` is done: when make run's simulated fleet follows dev (registered and
    read once), the operator starts a rollout that switches dev's hosts from web-os (stream9) to web-os-10 (its dev
    tag), the canary first; once the canary is through, the operator pauses it, to look at the new release before the
    rest. Returns (done, what happened). Nothing is started or paused twice: what someone playing with the demo did to
    the rollout (resumed it, aborted it) is theirs to keep."""
    team = demo_team()
    ten = ImageDefinition.objects.filter(team=team, name=DEMO_DEFINITION_10).first() if team else None
    dev = team.stages.filter(name="dev").first() if team else None
    held = StageHistory.objects.current(dev, ten) if ten and dev else None
    if held is None:
        return True, "web-os-10 is not on dev: no 9 → 10 rollout"
    reference = dev.reference(ten)
    rollout = Rollout.objects.filter(stage=dev, reference=reference, switch=True).order_by("-pk").first()
    if rollout is None:
        hosts = rollouts.stage_hosts(dev).exclude(host_key="")
        if not hosts.exists() or hosts.filter(status_at__isnull=True).exists():
            return False, "waiting for the fleet's dev hosts (make run's demo_fleet) to be read"
        admin = User.objects.filter(username="admin").first()
        operator = User.objects.filter(username="operator", memberships__team=team).first()
        rollouts.policy_save(stage=dev, user=admin, windows=[], fields={
            "canary_count": 1, "batch_count": None, "soak_seconds": 0, "max_failed_percent": 50,
            "rollback_failed": True, "follow_automatically": False})
        rollouts.rollout_start(stage=dev, reference=reference, digest=held.digest, switch=True, user=operator,
                               trigger="demo")
        return False, "started the web-os 9 → 10 rollout on dev"
    paused = AuditEvent.objects.filter(action="rollout.pause", object_type="rollouts.rollout",
                                       object_id=str(rollout.pk)).exists()
    if rollout.status == RolloutStatus.RUNNING and not paused:
        if rollout.batch == 0:
            return False, "the 9 → 10 canary is switching"
        operator = User.objects.filter(username="operator", memberships__team=team).first()
        rollouts.rollout_pause(rollout=rollout, user=operator)
        return True, f"{READY}: the web-os 9 → 10 rollout is paused after its canary"
    return True, READY


def stage_digests(team=None):
    """{stage name: digest} of what the demo definition's stages hold, and {version: digest} of its builds, for the
    simulated fleet; ({}, {}) while the demo is not built."""
    team = team or demo_team()
    definition = ImageDefinition.objects.filter(team=team, name=DEMO_DEFINITION).first() if team else None
    if definition is None:
        return definition, {}, {}
    stages = {stage.name: StageHistory.objects.current(stage, definition) for stage in team.stages.all()}
    held = {name: entry.digest for name, entry in stages.items() if entry is not None}
    versions = {}
    for version, revision in zip(VERSIONS, definition.revisions.order_by("number")[:2], strict=False):
        build = Build.objects.filter(revision=revision).order_by("number").first()
        build = build if build is not None and build.succeeded else None
        if build is not None:
            versions[version] = build.digest
    return definition, held, versions
