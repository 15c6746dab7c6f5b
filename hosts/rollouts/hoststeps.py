"""One host's steps in a rollout: the command each step sends (its row written first), and how what the host then
answers moves its row on (`_on_<kind>`). The engine (`hosts.rollouts.engine`) decides when a step starts and owns the
loop; `HostSteps` is the half of it that talks to one host and writes that host's row, its timeline and its audit."""

import json
import logging

from django.utils import timezone

from builds.releases.apply import stage_signature_requirement
from hosts import bootc, drift
from hosts.connect import setting, target_for
from hosts.models import EventKind, Host, HostEvent
from hosts.poller import record_outcome
from portal import services as portal_services
from portal import ssh
from portal.formatting import short_digest

from . import jobs
from .models import RolloutHost, Step

log = logging.getLogger(__name__)


def capabilities(raw_status):
    """What the host's bootc can do, from the fields its status has (bootc adds fields with versions): {"arch":
    rollback --apply and architecture (1.1.7), "soft": --soft-reboot (1.7.0), "download": --download-only (1.12.0)}."""
    try:
        document = json.loads(raw_status or "{}")
    except ValueError:
        document = {}
    status = document.get("status") or {}
    entry = status.get("booted") or {}
    image = entry.get("image") or {}
    return {"rollback_apply": "architecture" in image, "soft": "softRebootCapable" in entry,
            "download": "downloadOnly" in entry}


class HostSteps:
    """The per-host half of the engine (it needs self.rollout, self.policy, self.sink, self.jobs and self.pool)."""

    # --- starting steps (the row first, then the host) ---

    def _target(self, row):
        return target_for(row.host)

    def _enforces_signatures(self):
        """A switch to a stage that requires a key makes bootc enforce the host's container policy (asked once)."""
        if not hasattr(self, "_signature_requirement"):
            self._signature_requirement = stage_signature_requirement(self.rollout.stage)
        return bool(self._signature_requirement)

    def _preflight(self, row):
        """Before its batch acts on a host: the image has its architecture, /sysroot has room, and (upgrading what it
        tracks) the registry answers the host. A host that fails one is skipped with the reason."""
        host, digests = row.host, self.rollout.digests or {}
        if host.architecture and set(digests) - {""} and host.architecture not in digests:
            self._finish(row, Step.SKIPPED, f"pre-flight: the image has no {host.architecture} build "
                                            f"(it has {', '.join(sorted(set(digests) - {''}))})")
            return
        commands = [ssh.df_sysroot()] + ([] if self._switching(row) else [ssh.bootc_upgrade(check=True)])
        self._submit(row, "checked", jobs.job_preflight, self._target(row), commands)

    def _on_checked(self, row, result):
        need = setting("ROLLOUTS_MIN_FREE_BYTES", 1024 ** 3)
        if result.get("error", "").startswith("unreachable"):
            self._fail(row, result["error"])
        elif result.get("error"):
            self._finish(row, Step.SKIPPED, f"pre-flight: {result['error']}")
        elif result.get("free") is not None and result["free"] < need:
            self._finish(row, Step.SKIPPED, f"pre-flight: {_size(result['free'])} free on /sysroot, the update needs "
                                            f"{_size(need)}")
        elif self._switching(row):
            # A major upgrade: the deployment it boots now stays on the host as a fallback (ostree prunes an
            # unpinned one once two newer deployments exist), so a rollback to the old stream stays possible.
            self._submit(row, "pinned", jobs.job_pin_booted, self._target(row))
        else:
            RolloutHost.objects.filter(pk=row.pk).update(checked_at=timezone.now())

    def _on_pinned(self, row, result):
        if result.get("error", "").startswith("unreachable"):
            self._fail(row, result["error"])
        elif result.get("error"):
            self._finish(row, Step.SKIPPED, "pre-flight: could not pin the booted deployment as a fallback "
                                            f"(`ostree admin pin`): {result['error']}")
        else:
            RolloutHost.objects.filter(pk=row.pk).update(checked_at=timezone.now())
            self.sink.write(f"{row.host.name}: pinned the booted deployment {short_digest(result['pinned'])} as the "
                            "fallback of the switch")
            self._event(row, f"pinned {short_digest(result['pinned'])} as the fallback before the switch")

    def _start_download(self, row):
        now = timezone.now()
        RolloutHost.objects.filter(pk=row.pk).update(step=Step.DOWNLOADING, download_started_at=now,
                                                     attempts=row.attempts + 1, previous_digest=row.host.booted_digest)
        row.step = Step.DOWNLOADING
        command = (ssh.bootc_switch(self.rollout.reference, download_only=True,
                                    enforce_signatures=self._enforces_signatures())
                   if self._switching(row) else ssh.bootc_upgrade(download_only=True))
        self._event(row, f"downloading {short_digest(self.rollout.digest)} (staged locked until the window)")
        self.sink.write(f"{row.host.name}: $ {command.for_user(row.host.ssh_user)}")
        self._submit(row, "downloaded", jobs.job_command, self._target(row), [command], False)

    def _start_reboot(self, row, caps, *, download_too=False):
        soft = bool(self.policy.get("soft_reboot")) and caps["soft"] and self._staged_soft(row)
        if download_too:
            # bootc before 1.12.0 has no --download-only: download and reboot together, inside the window.
            commands = ([ssh.bootc_switch(self.rollout.reference, apply=True,
                                          enforce_signatures=self._enforces_signatures())]
                        if self._switching(row) else [ssh.bootc_upgrade(apply=True)])
            self.sink.write(f"{row.host.name}: bootc older than 1.12.0 (its status has no downloadOnly): it "
                            "downloads in the window, with the reboot")
        else:
            commands = [ssh.bootc_upgrade(from_downloaded=True, apply=True, soft_reboot="auto" if soft else "")]
        now = timezone.now()
        RolloutHost.objects.filter(pk=row.pk).update(step=Step.REBOOTING, reboot_sent_at=now, soft_reboot=soft,
                                                     previous_digest=row.previous_digest or row.host.booted_digest)
        row.step, row.reboot_sent_at = Step.REBOOTING, now
        self._event(row, f"{'soft-' if soft else ''}rebooting into {short_digest(self.rollout.digest)}")
        for command in commands:
            self.sink.write(f"{row.host.name}: $ {command.for_user(row.host.ssh_user)}")
        self._submit(row, "back", jobs.job_command, self._target(row), commands, True, jobs.host_fingerprint(row.host))

    def _start_rollback(self, row, caps, *, why):
        if not caps["rollback_apply"]:
            reason = (f"{why}; not rolled back: its bootc is older than 1.1.7 (no `rollback --apply`; its status has "
                      "no architecture): roll it back by hand")
            self._finish(row, Step.FAILED, reason)
            self._audit_host(row, "rollout.host_not_rolled_back", reason)
            return
        now = timezone.now()
        RolloutHost.objects.filter(pk=row.pk).update(step=Step.ROLLING_BACK, rollback_sent_at=now, reason=why)
        row.step, row.rollback_sent_at, row.reason = Step.ROLLING_BACK, now, why
        command = ssh.bootc_rollback(apply=True)
        self._event(row, f"rolling back ({why})")
        self._audit_host(row, "rollout.host_rollback", f"rolling back {row.host.name}: {why}")
        self.sink.write(f"{row.host.name}: $ {command.for_user(row.host.ssh_user)}")
        self._submit(row, "rolled_back", jobs.job_command, self._target(row), [command], True,
                     jobs.host_fingerprint(row.host))

    def _submit(self, row, kind, function, *args):
        """Hand a job to the pool. Its row's step was written (and, the engine writing outside any transaction of its
        own, committed) before: never act on a host before its row says so."""
        if row.pk in self.jobs:
            return
        job = _Job()
        job.future = self.pool.submit(function, row.host.pk, *args)
        self.jobs[row.pk] = (kind, job)

    # --- what the hosts answered ---

    def _collect(self, rows):
        by_id = {row.pk: row for row in rows}
        for row_id, (kind, job) in list(self.jobs.items()):
            future = job.future
            if future is None or not future.done():
                continue
            del self.jobs[row_id]
            row = by_id.get(row_id)
            if row is None:
                continue
            try:
                result = future.result()
            except Exception as exc:  # noqa: BLE001 - one host's odd failure must not stop the rollout
                log.exception("rollout %s: host %s", self.rollout.pk, row.host_id)
                result = {"error": f"{type(exc).__name__}: {exc}"}
            # No transaction around this: a step the handler starts is written (committed) before it acts.
            outcome = result.get("outcome")
            if outcome is not None:
                record_outcome(row.host, outcome)
                row.host.refresh_from_db()
            getattr(self, f"_on_{kind}")(row, result)

    def _on_downloaded(self, row, result):
        if result.get("error"):
            self._fail(row, _reason(result["error"]))
            return
        self._on_recheck(row, result, downloaded=True)

    def _on_recheck(self, row, result, *, downloaded=False):
        host = row.host
        if result.get("outcome") is not None and result["outcome"].error is not None:
            self._fail(row, f"unreachable: {result['outcome'].error}")
            return
        if host.staged_digest and self._matches(host.staged_digest, host) and self._on_target_stream(host, "staged"):
            RolloutHost.objects.filter(pk=row.pk).update(step=Step.STAGED, staged_at=timezone.now())
            self.sink.write(f"{host.name}: its bootc status shows the target {short_digest(host.staged_digest)} "
                            "staged")
            return
        if self._matches(host.booted_digest, host) and self._on_target_stream(host, "booted"):
            self._finish(row, Step.UPDATED, "already boots the target digest")
            return
        if not downloaded and row.attempts < 3:
            # Resumed: the download this row recorded did not finish (its worker died); downloading again is the
            # same request (bootc answers "Staged update present, not changed" if it had).
            RolloutHost.objects.filter(pk=row.pk).update(step=Step.WAITING)
            self.sink.write(f"{host.name}: the download recorded before the restart did not finish; it starts again")
            return
        command = "bootc switch --download-only" if self.rollout.switch else "bootc upgrade --download-only"
        self._fail(row, f"after `{command}`, {self._not_the_target(host, 'staged')}")

    def _on_back(self, row, result):
        host = row.host
        outcome = result.get("outcome")
        if result.get("error") and (outcome is None or outcome.error is not None):
            if outcome is None:
                self._fail(row, _reason(result["error"]))
            else:
                self._fail(row, f"unreachable: did not come back after the reboot ({outcome.error})")
            return
        downtime = result.get("downtime")
        RolloutHost.objects.filter(pk=row.pk).update(back_at=timezone.now(), downtime_seconds=downtime)
        row.back_at = timezone.now()
        row.downtime_seconds = downtime
        if self._matches(host.booted_digest, host) and self._on_target_stream(host, "booted"):
            journal = result.get("journal") or []
            if any("FAILURE" in line or "checks failed" in line for line in journal):
                self._fail(row, "booted the target, but greenboot's health check failed")
                return
            RolloutHost.objects.filter(pk=row.pk).update(step=Step.SOAKING)
            self.sink.write(f"{host.name}: booted {short_digest(host.booted_digest)}"
                            + (f" after {downtime:.1f} s down" if downtime is not None else "")
                            + (" (soft reboot)" if row.soft_reboot else "") + "; soaking")
            return
        if host.rollback_digest and self._matches(host.rollback_digest, host):
            reason = (f"greenboot's health check failed: the host fell back to {short_digest(host.booted_digest)} on "
                      "its own (automatic rollback)")
            self._finish(row, Step.ROLLED_BACK, reason)
            self._audit_host(row, "rollout.host_failed", f"{host.name} {reason}")
            return
        if host.staged_digest and self._matches(host.staged_digest, host) and row.reboot_sent_at:
            # A resumed rollout whose reboot never reached the host: it still waits, staged; the reboot is sent again
            # only because it was never received (the host booted nothing new).
            if host.booted_digest == row.previous_digest and not result.get("sent"):
                RolloutHost.objects.filter(pk=row.pk).update(step=Step.STAGED, reboot_sent_at=None)
                self.sink.write(f"{host.name}: the reboot never happened (still staged); it goes again in its window")
                return
        self._fail(row, f"after the reboot, {self._not_the_target(host, 'booted', before=row.previous_digest)}")

    def _on_verify(self, row, result):
        host = row.host
        outcome = result.get("outcome")
        if outcome is None or outcome.error is not None:
            self._fail(row, f"unreachable during the soak time: {outcome.error if outcome else result.get('error')}")
            return
        if self._matches(host.booted_digest, host):
            self._finish(row, Step.UPDATED, "")
            return
        self._fail(row, f"left the target during the soak time: it boots {short_digest(host.booted_digest)}")

    def _on_rolled_back(self, row, result):
        host = row.host
        outcome = result.get("outcome")
        if outcome is None or outcome.error is not None:
            self._finish(row, Step.FAILED, f"{row.reason}; the rollback was sent but the host did not come back")
            return
        if not self._matches(host.booted_digest, host):
            self._finish(row, Step.ROLLED_BACK, f"{row.reason}; rolled back to "
                                                f"{short_digest(host.booted_digest)}")
            return
        self._finish(row, Step.FAILED, f"{row.reason}; the rollback did not take (still boots the target)")

    def _fail(self, row, reason):
        """A failed host: with the policy's automatic rollback, one that boots the target goes back; else failed."""
        host = row.host
        self._audit_host(row, "rollout.host_failed", f"{host.name} failed: {reason}")
        rollback = self.policy.get("rollback_failed") and self._matches(host.booted_digest, host) and host.reachable
        if rollback:
            RolloutHost.objects.filter(pk=row.pk).update(step=Step.FAILED, reason=reason)
            row.step = Step.FAILED
            self.sink.write(f"{host.name}: failed: {reason}")
            self._start_rollback(row, capabilities(host.raw_status), why=reason)
            return
        self._finish(row, Step.FAILED, reason)

    def _finish(self, row, step, reason):
        RolloutHost.objects.filter(pk=row.pk).update(step=step, reason=reason[:2000], finished_at=timezone.now())
        row.step, row.reason = step, reason
        label = Step(step).label.lower()
        self.sink.write(f"{row.host.name}: {label}" + (f": {reason}" if reason else ""))
        self._event(row, label + (f": {reason}" if reason else ""))
        if step == Step.UPDATED and self.rollout.switch and row.host.tracked_image != self.rollout.reference:
            # It boots the new stream and its bootc tracks it: the portal's record of what it tracks follows, so its
            # drift is judged against the new stream's tag, not the old one's.
            Host.objects.filter(pk=row.host_id).update(tracked_image=self.rollout.reference)
            row.host.tracked_image = self.rollout.reference
            drift.refresh_expected(Host.objects.filter(pk=row.host_id))

    # --- helpers ---

    def _matches(self, digest, host):
        if not digest:
            return False
        return bootc.digest_matches(bootc.ImageInfo(digest=digest, architecture=host.architecture),
                                    self.rollout.digests or {"": self.rollout.digest})

    def _on_target_stream(self, host, slot):
        """For a switch, whether the host's `slot` deployment (and spec) is an image of the rollout's reference, as its
        bootc status says: the right digest under another name is another stream's build."""
        if not self.rollout.switch:
            return True
        entry = ((host.status or {}).get(slot) or {}).get("image") or {}
        return entry.get("image", self.rollout.reference) == self.rollout.reference

    def _not_the_target(self, host, slot, *, before=""):
        """Why the host's `slot` deployment, as its bootc status shows it, is not what the rollout asked for (`before`:
        the digest it booted before the rollout acted on it)."""
        rollout = self.rollout
        entry = ((host.status or {}).get(slot) or {}).get("image") or {}
        digest = entry.get("digest") or ""
        if not digest:
            return f"its bootc status shows nothing {slot}; the rollout asked for {rollout.reference} at " \
                   f"{short_digest(rollout.digest)}"
        shown = f"{entry.get('image') or '(no image name)'} at {short_digest(digest)}" + (
            f" ({entry['version']})" if entry.get("version") else "")
        asked = f"{rollout.reference} at {short_digest(rollout.digest)}" + (
            f" ({rollout.version})" if rollout.version else "")
        if before and digest == before:
            why = "it still boots what it booted before: the update was not applied"
        elif entry.get("image") == rollout.reference:
            why = "its tag moved since the rollout started: roll out what it holds now in a new rollout"
        elif rollout.switch:
            why = f"the host tracks {host.spec_image or 'nothing'}"
        else:
            why = "the host tracks another image"
        return f"its bootc status shows {shown} {slot}, not the rollout's target {asked}: {why}"

    def _switching(self, row):
        return self.rollout.switch and row.host.spec_image != self.rollout.reference

    def _staged_soft(self, row):
        staged = (row.host.status or {}).get("staged") or {}
        return bool(staged.get("soft_reboot_capable"))

    def _event(self, row, text):
        rollout = self.rollout
        HostEvent.objects.create(host=row.host, kind=EventKind.ACTION, summary=(
            f"Rollout #{rollout.pk} ({batch_name(row.batch)}): {text}")[:500], detail={"rollout": rollout.pk})

    def _audit_host(self, row, action, summary):
        portal_services.audit(action=action, summary=f"rollout #{self.rollout.pk}: {summary}"[:500],
                              team=self.rollout.team, obj=self.rollout, actor_name="portal",
                              detail={"host": row.host.pk, "batch": row.batch})


class _Job:
    """A job handed to the pool."""

    future = None


def batch_name(batch):
    return "the canary" if batch == 0 else f"batch {batch}"


def _reason(error):
    text = str(error).strip().splitlines()
    return text[-1] if text else "failed"


def _size(n):
    return f"{n / 1024 ** 3:.1f} GiB" if n >= 1024 ** 3 else f"{n / 1024 ** 2:.0f} MiB"
