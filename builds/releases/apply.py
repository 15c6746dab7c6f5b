"""What a worker does to apply an approved promotion: the whole of the `builds.releases.tasks.promotion_apply` task.

1. Start the run with a conditional UPDATE (a redelivered task does nothing).
2. Read what the stage tag resolves to now (`skopeo inspect`): a registry that does not answer fails here, untouched.
3. `skopeo copy --preserve-digests docker://REPO@DIGEST docker://REPO:STAGE`: the manifest is written last, so a copy
   that fails leaves the tag where it was. When a feature answers `promotion.copy_trust` (the supply chain: the stage
   requires a signature), the copy runs under the `policy.json` and `registries.d` it gives, so containers/image itself
   refuses a digest without a valid signature.
4. Check that the tag now resolves to exactly DIGEST.
5. Record, in one transaction: the stage history entry, the promotion applied, the audit event, the run succeeded.

If anything fails after the tag moved (the check, or recording it), the tag is put back to the digest it held before,
so nothing is left half applied; the promotion is marked failed with the reason and can be retried.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from builds import fetches, registry
from builds.runner import CommandFailed, LocalRunner, Watch
from portal import runs
from portal.models import Run, RunStatus
from portal.registry import announce, providers
from portal.services import RunStateError, audit, run_finish, run_set_phase
from portal.text import storable

from . import notifications
from .models import Promotion, PromotionKind, PromotionStatus, StageHistory

log = logging.getLogger(__name__)

# Announced (portal.registry) after an applied promotion commits, with reference (repository:tag), digest, the
# build's architecture and, for a manifest list, digests: {architecture: that architecture's digest}.
PROMOTION_APPLIED = "promotion.applied"


# Asked (portal.registry.providers) with promotion=...: a CopyTrust the copy must run under, or None.
COPY_TRUST = "promotion.copy_trust"

# Asked (portal.registry.providers) with stage=...: the signature a stage's images must carry, in words ("prod requires
# a signature with key release (1A2B...)"), or "". Hosts switching to a stage's images then make bootc enforce it.
STAGE_SIGNATURE_REQUIREMENT = "stage.signature_requirement"


def stage_signature_requirement(stage) -> str:
    """The first answer of a `stage.signature_requirement` provider for `stage` (None: no stage), or ""."""
    if stage is None:
        return ""
    for provider in providers(STAGE_SIGNATURE_REQUIREMENT):
        requirement = provider(stage=stage)
        if requirement:
            return requirement
    return ""


class ApplyFailed(runs.Failed):
    """The application failed; the message is the reason people read."""


@dataclass(frozen=True)
class CopySigning:
    """A key that signs the digest as the promotion's copy writes it to the stage tag (a stage that signs what enters
    it). `prepare(runner, workdir)` is a context manager that puts the key in the run's private directory for the
    copy and yields (extra `copy_by_digest_args` keywords, environment); `recorded(promotion=, run=)` is called in the
    transaction that records the promotion applied, and raises (so the tag is put back) when the signature is not
    where it should be."""

    description: str
    prepare: Callable
    recorded: Callable


@dataclass(frozen=True)
class CopyTrust:
    """What the promotion's copy must verify, as containers/image's own files: `policy_json` (containers-policy.json)
    and `registries_d` ({file name: text}, containers-registries.d), and `requirement`, the rule in words, which
    starts the reason when skopeo refuses the digest. `signing`: a key that signs the digest during the copy."""

    policy_json: str
    requirement: str
    registries_d: dict[str, str] = field(default_factory=dict)
    signing: CopySigning | None = None


def copy_trust(promotion) -> CopyTrust | None:
    """The trust the copy of `promotion` runs under: the first answer of a `promotion.copy_trust` provider."""
    for provider in providers(COPY_TRUST):
        trust = provider(promotion=promotion)
        if trust is not None:
            return trust
    return None


def promotion_apply_execute(run_id: int) -> None:
    promotion = Promotion.objects.with_related().filter(run_id=run_id).first()
    run = Run.objects.filter(pk=run_id).first()
    if promotion is None or run is None or run.status != RunStatus.QUEUED:
        log.info("promotion_apply for run %s: nothing to do (%s)", run_id,
                 "no such run" if run is None else f"the run is {run.status}")
        if promotion is not None and run is not None and not run.is_active:
            # Cancelled (or reaped) before a worker took it: the promotion fails with that reason now, not at beat.
            fail_promotion(promotion.pk, run_id=run.pk, reason=run.exit_reason or f"Its run is {run.status}.")
        return  # gone, or already started or ended (a redelivered task)
    if promotion.status != PromotionStatus.APPLYING:
        try:
            run_finish(run, status=RunStatus.CANCELLED, reason=f"Promotion #{promotion.pk} is "
                                                                f"{promotion.get_status_display().lower()}; not applied.")
        except RunStateError:
            pass
        return
    if not runs.claim(run, phase="resolving"):
        return
    limit = runs.Limit(settings.PROMOTION_APPLY_TIMEOUT_SECONDS, "PROMOTION_APPLY_TIMEOUT_SECONDS")
    with runs.executing(run, what="the promotion's application", limit=limit, stopped="the stage tag was not moved",
                        unavailable="This worker cannot run skopeo",
                        before_finish=lambda execution: _failed(promotion.pk, run.pk, execution)) as execution:
        _apply(promotion, execution, limit)


def _failed(promotion_id, run_id, execution):
    if not execution.succeeded:
        _mark_failed(promotion_id, run_id=run_id, reason=execution.reason)


def _apply(promotion, execution, limit):
    """Copy, verify and record; if the work stops after the tag moved, the tag is put back (noted in the reason)."""
    run, sink = execution.run, execution.sink
    runner = LocalRunner()
    watch = Watch(run=run, sink=sink, deadline=time.monotonic() + limit.seconds)
    definition, stage = promotion.definition, promotion.target_stage
    source_repository = promotion.build.repository or definition.repository
    source = f"{source_repository}@{promotion.digest}"
    target = stage.reference(definition)
    access = registry.access_for(definition.team, definition.registry)
    workdir = authfile = None
    previous, moved = "", False
    try:
        what = "Roll back" if promotion.is_rollback else "Promote"
        sink.write(f"{what} {source} to {target} (request #{promotion.pk} by {promotion.requested_by_name or '?'}: "
                   f"{promotion.reason.splitlines()[0][:200] if promotion.reason else ''})")
        for repository in dict.fromkeys([source_repository, definition.repository]):
            refusal = fetches.repository_refusal(repository, definition.team)
            if refusal:
                raise ApplyFailed(f"{refusal} The stage tag was not touched.")
        trust = copy_trust(promotion)
        if access.auth_json() or trust is not None:
            workdir = runner.mkdtemp()
        if access.auth_json():
            authfile = f"{workdir}/auth.json"
            runner.write_file(authfile, access.auth_json(), 0o600)
        trust_files = _write_trust(runner, workdir, trust, sink) if trust is not None else {}

        previous = _resolve(runner, watch, target, access, authfile, missing_ok=True)
        sink.write(f"{target} resolves to {previous} now" if previous else f"{target} does not exist yet")
        if previous == promotion.digest:
            sink.write("The tag already points at this digest: nothing to copy.")
        else:
            run_set_phase(run, "copying")
            signing = trust.signing if trust is not None else None
            if signing is not None:
                sink.write(f"{signing.description}: skopeo signs the digest as it copies it")
            try:
                with signing.prepare(runner, workdir) if signing else nullcontext(({}, None)) as (sign_args, env):
                    runner.run(registry.copy_by_digest_args(source, target, tls_verify=access.tls_verify,
                                                            authfile=authfile, **trust_files, **sign_args),
                               watch=watch, env=env)
            except CommandFailed as exc:
                if trust is not None and _refused_by_policy(exc):
                    raise ApplyFailed(f"{trust.requirement}, and containers/image refused this digest: "
                                      f"{_last_error(exc)}. The stage tag was not moved.") from exc
                raise ApplyFailed(f"skopeo copy failed ({exc}): {_last_error(exc)}. The stage tag was not moved.") from exc
            moved = True
            execution.stopped = "the stage tag had moved"

        run_set_phase(run, "verifying")
        now_digest = _resolve(runner, watch, target, access, authfile)
        if now_digest != promotion.digest:
            raise ApplyFailed(f"After the copy {target} resolves to {now_digest or 'nothing'}, not {promotion.digest}.")
        sink.write(f"Verified: {target} resolves to {now_digest}")
        if promotion.build.is_manifest_list:
            _verify_architectures(runner, watch, target, promotion.build, access, authfile, sink)
        signed = trust.signing if trust is not None and moved else None
        _record_success(promotion, execution, previous=previous, signed=signed)
    except BaseException:
        if moved:
            execution.note(_put_back(runner, target, previous, access, authfile, sink))
        raise
    finally:
        if workdir:
            runner.remove_tree(workdir)


def _verify_architectures(runner, watch, target, manifest_list, access, authfile, sink):
    """Each architecture of the copied list is its member's digest: what a host of that architecture will pull."""
    try:
        raw = runner.run(registry.inspect_args(target, tls_verify=access.tls_verify, authfile=authfile, raw=True),
                         watch=watch, capture=True).stdout
    except CommandFailed as exc:
        raise ApplyFailed(f"Could not read the list {target} holds now: {_last_error(exc)}.") from exc
    found = registry.platform_digests(json.loads(raw))
    for member in manifest_list.members.all():
        if found.get(member.architecture) != member.digest:
            raise ApplyFailed(f"After the copy {target} holds {found.get(member.architecture) or 'nothing'} for "
                              f"{member.architecture}, not build {member.number}'s {member.digest}.")
        sink.write(f"Verified {member.architecture}: {member.digest} (build {member.number})")


def _write_trust(runner, workdir, trust, sink) -> dict[str, str]:
    """The trust files in the run's private directory; the copy's `policy` and `registries_d` arguments."""
    policy = os.path.join(workdir, "policy.json")
    runner.write_file(policy, trust.policy_json.encode(), 0o600)
    registries_d = os.path.join(workdir, "registries.d")
    runner.mkdir(registries_d)
    for name, text in trust.registries_d.items():
        runner.write_file(os.path.join(registries_d, os.path.basename(name)), text.encode(), 0o600)
    sink.write(f"{trust.requirement}: skopeo verifies it under the stage's policy.json")
    return {"policy": policy, "registries_d": registries_d}


def _refused_by_policy(exc: CommandFailed) -> bool:
    """Whether skopeo stopped because the policy rejected the source (containers/image's "Source image rejected")."""
    return any("source image rejected" in line.lower() for line in exc.output_tail)


def _resolve(runner, watch, reference, access, authfile, *, missing_ok=False) -> str:
    """The digest `reference` resolves to; "" if the tag does not exist and `missing_ok`."""
    try:
        result = runner.run(registry.inspect_args(reference, tls_verify=access.tls_verify, authfile=authfile),
                            watch=watch, capture=True)
    except CommandFailed as exc:
        text = "\n".join(exc.output_tail).lower()
        if missing_ok and ("manifest unknown" in text or "not found" in text and "connection" not in text):
            return ""
        raise ApplyFailed(f"Could not read {reference} from the registry: {_last_error(exc)}. The stage tag was not "
                          "touched.") from exc
    return registry.parse_inspect(result.stdout).digest


def _last_error(exc: CommandFailed) -> str:
    """skopeo's last line, without its logfmt wrapper (time=... level=fatal msg="...")."""
    return registry.skopeo_error(exc.output_tail) or str(exc)


def _put_back(runner, target, previous, access, authfile, sink) -> str:
    """Move the tag back to where it was, after it moved but the promotion could not be completed."""
    if not previous:
        return (f"{target} did not exist before and now points at the promoted digest; skopeo cannot remove a tag "
                "without deleting the manifest, so it was left as is.")
    repository = target.rsplit(":", 1)[0]
    watch = Watch(run=None, sink=sink, deadline=time.monotonic() + settings.PROMOTION_APPLY_TIMEOUT_SECONDS)
    try:
        runner.run(registry.copy_by_digest_args(f"{repository}@{previous}", target, tls_verify=access.tls_verify,
                                                authfile=authfile), watch=watch)
    except Exception as exc:  # noqa: BLE001
        return f"Putting {target} back to {previous} failed too ({exc}): check the tag by hand."
    return f"{target} was put back to {previous}."


def _record_success(promotion, execution, *, previous, signed=None):
    """The stage history entry, the promotion applied, its audit record, the signature made during the copy (`signed`)
    and the run succeeded: all or nothing."""
    run, sink = execution.run, execution.sink
    with transaction.atomic():
        locked = Promotion.objects.select_for_update(of=("self",)).with_related().get(pk=promotion.pk)
        if locked.status != PromotionStatus.APPLYING or locked.run_id != run.pk:
            raise ApplyFailed(f"Request #{locked.pk} became {locked.get_status_display().lower()} while it was applied.")
        if signed is not None:
            sink.write(signed.recorded(promotion=locked, run=run))
        now = timezone.now()
        entry = StageHistory.objects.create(
            stage=locked.target_stage, definition=locked.definition, digest=locked.digest, previous_digest=previous,
            build=locked.build, promotion=locked, kind=locked.kind, roll_forward=locked.roll_forward,
            applied_by=locked.requested_by, applied_by_name=locked.requested_by_name, applied_at=now,
        )
        locked.status, locked.status_note, locked.applied_at = PromotionStatus.APPLIED, "", now
        locked.save(update_fields=["status", "status_note", "applied_at", "updated_at"])
        stage = locked.target_stage
        summary = (f"{'rolled back' if locked.kind == PromotionKind.ROLLBACK else 'promoted'} {locked.definition} to "
                   f"{locked.short_digest} on {stage.name}" + (" (pinned until rolled forward)"
                                                                if locked.kind == PromotionKind.ROLLBACK else ""))
        audit(action="promotion.applied", summary=f"{summary} (#{locked.pk})", actor_name="portal", team=stage.team,
              obj=locked, detail={"digest": locked.digest, "previous_digest": previous, "stage": stage.name,
                                  "history": entry.pk, "run": run.pk, "kind": locked.kind})
        sink.write(f"Recorded: {stage.name} of {locked.definition} is {locked.digest} (history entry {entry.pk})")
        execution.succeed()
        notifications.notify(event=notifications.PromotionEvent.APPLIED, team=stage.team, promotion=locked)
        # Whoever tracks the stage tag (hosts, which may read releases, subscribe) now expects this digest.
        details = {"reference": stage.reference(locked.definition), "digest": locked.digest,
                   "architecture": locked.build.architecture,
                   "digests": {m.architecture: m.digest for m in locked.build.members.all()}}
        transaction.on_commit(lambda: announce(PROMOTION_APPLIED, **details))


def fail_promotion(promotion_id: int, *, run_id: int | None, reason: str, run_status=RunStatus.FAILED):
    """Mark an applying promotion failed with the reason (it may be retried), and end its run if it is still going."""
    with transaction.atomic():
        Promotion.objects.select_for_update(of=("self",)).filter(pk=promotion_id).first()  # before the run's row
        if run_id is not None:
            run = Run.objects.filter(pk=run_id).first()
            if run is not None and run.is_active:
                try:
                    run_finish(run, status=run_status, reason=reason)
                except RunStateError:
                    pass
        _mark_failed(promotion_id, run_id=run_id, reason=reason)


def _mark_failed(promotion_id, *, run_id, reason):
    """The promotion failed (if it is still applying with this run): its note, the audit record, the notification."""
    with transaction.atomic():
        locked = Promotion.objects.select_for_update(of=("self",)).with_related().filter(pk=promotion_id).first()
        if locked is None or locked.status != PromotionStatus.APPLYING or (run_id and locked.run_id != run_id):
            return
        locked.status, locked.status_note = PromotionStatus.FAILED, storable(reason)[:500]
        locked.save(update_fields=["status", "status_note", "updated_at"])
        audit(action="promotion.failed", summary=f"applying #{locked.pk} ({locked.definition} to "
              f"{locked.target_stage.name}) failed: {reason}", actor_name="portal", team=locked.team, obj=locked,
              detail={"digest": locked.digest, "stage": locked.target_stage.name, "run": run_id, "reason": reason})
        notifications.notify(event=notifications.PromotionEvent.FAILED, team=locked.team, promotion=locked)
