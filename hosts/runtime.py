"""What changed on a host since it booted its image: the small forks of the image that no approver saw.

Read over the same channel as the status (SSH), with commands a real bootc host has:
- `ostree admin config-diff`: /etc against the deployment's merge base (/usr/etc). ostree prints one path per line,
  a letter and four spaces before it: `M` modified, `A` added, `D` deleted (ostree_diff_print in ostree's
  src/libostree/ostree-diff.c), the path relative to /etc;
- the installed packages, read by the script builds read images with (`portal.packages`), compared with the package
  list the portal holds for the booted digest (the build that made it);
- the /usr overlay from the status the poller already read (`usrOverlay`, bootc 1.14);
- for the first changed files, both sides (`portal.ssh.etc_file`: /usr/etc/<path>, the image's version, and
  /etc/<path>), turned into diffs with secrets masked before anything is stored (`hosts.etcdiff`).

Hosts that report in (hosts/reportin.py) send the same two outputs through their agent, hourly by default
(`parse_agent_report`), and the same `runtime_record` stores them; their agent sends no file contents, so their
changed files are listed without diffs.

A reading is stored only when it differs from the one before; each difference adds an event to the host's timeline.
"""

import hashlib
import json
import re
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from builds.models import Build
from portal import ssh
from portal.packages import parse_packages
from portal.text import storable

from . import etcdiff
from .connect import HostError, session_for, setting, target_for
from .models import (
    EventKind,
    Host,
    HostEvent,
    HostMode,
    HostRuntime,
    RuntimeChange,
    RuntimeChangeKind,
    RuntimeDrift,
    RuntimePolicy,
)

ETC_LIST_MAX = 200  # paths kept per host; the count says how many there are in all
PACKAGE_LIST_MAX = 500
_DIFF_LINE = re.compile(r"^([AMD])\s+(\S.*)$")


def parse_config_diff(text, *, limit=ETC_LIST_MAX):
    """([[kind, "/etc/path"], ...] up to `limit`, sorted by path; how many in all) from `ostree admin config-diff`.
    Lines that are not a letter and a path (warnings, blank lines) are skipped."""
    changes, total = [], 0
    for line in text.splitlines():
        match = _DIFF_LINE.match(line.strip())
        if not match:
            continue
        total += 1
        if len(changes) < limit:
            path = match.group(2).strip().lstrip("/")
            changes.append([match.group(1), storable("/etc/" + path)[:500]])
    changes.sort(key=lambda change: change[1])
    return changes, total


def compare_packages(on_host, in_image):
    """(added {name: version}, changed {name: [host, image]}, removed [names]) of the host's packages against its
    image's."""
    added = {name: version for name, version in on_host.items() if name not in in_image}
    changed = {name: [version, in_image[name]] for name, version in on_host.items()
               if name in in_image and in_image[name] != version}
    removed = sorted(name for name in in_image if name not in on_host)
    return (dict(sorted(added.items())[:PACKAGE_LIST_MAX]), dict(sorted(changed.items())[:PACKAGE_LIST_MAX]),
            removed[:PACKAGE_LIST_MAX])


def image_packages(digest):
    """{name: version} of the image the portal built with this digest, or None when it did not build it."""
    build = Build.objects.filter(digest=digest).exclude(package_format="").only("packages").first() if digest else None
    return build.packages if build is not None else None


def _read(host):
    """(config-diff text, package script output, {path: (kind, image side, host side)}) from the host: the two sides
    of the first changed files (etcdiff.plan), as etcdiff.parse_side reads them; a side not read is None."""
    timeout = setting("HOSTS_COMMAND_TIMEOUT", 30)
    with session_for(target_for(host)) as connection:
        outputs = []
        for command in (ssh.ostree_config_diff(), ssh.package_list()):
            result = connection.run(command, timeout=timeout)
            if result.exit_status != 0:
                lines = (result.error_text() or result.text()).strip().splitlines()
                raise HostError(f"could not {command.description}: {lines[-1] if lines else result.exit_status}")
            outputs.append(result.text())
        files = {}
        for kind, path in etcdiff.plan(parse_config_diff(outputs[0])[0]):
            sides = []
            for image, wanted in ((True, kind != "A"), (False, kind != "D")):
                if not wanted:
                    sides.append(None)
                    continue
                result = connection.run(ssh.etc_file(path, image=image, limit=etcdiff.READ_MAX), timeout=timeout,
                                        max_output=etcdiff.READ_MAX + 4096)
                sides.append(etcdiff.parse_side(result.stdout) if result.exit_status == 0 else ("unreadable", 0, b""))
            files[path] = (kind, *sides)
    return (*outputs, files)


def runtime_read(host):
    """Reads what changed on `host` and records it if it differs from the last reading. Returns the HostRuntime."""
    now = timezone.now()
    try:
        config_diff, package_output, files = _read(host)
    except (ssh.SSHError, HostError) as exc:
        return runtime_failed(host, str(exc), at=now)
    return runtime_record(host, config_diff=config_diff, package_output=package_output, files=files, at=now)


def runtime_failed(host, reason, *, at=None):
    """A reading that failed: the last one is kept, with when and why this one failed."""
    runtime, _ = HostRuntime.objects.get_or_create(host=host)
    HostRuntime.objects.filter(pk=runtime.pk).update(read_at=at or timezone.now(), error=storable(reason)[:500])
    runtime.refresh_from_db()
    return runtime


AGENT_SECTION = "#portal-agent "


def parse_agent_report(text):
    """(config-diff output, package script output, why it failed or "") from what a host's agent posts: a line
    `#portal-agent config-diff`, that command's output, a line `#portal-agent packages`, the package script's output;
    `#portal-agent failed: <reason>` where a command failed. Neither output has a line starting so (config-diff's lines
    start with A, M or D; the package script's with `#format`, a package name, a dpkg field or a space)."""
    sections, current, failed = {"config-diff": [], "packages": []}, None, ""
    for line in text.splitlines():
        if line.startswith(AGENT_SECTION):
            word = line[len(AGENT_SECTION):].strip()
            if word.startswith("failed:"):
                failed = failed or word.removeprefix("failed:").strip() or "a command failed on the host"
            current = word if word in sections else None
        elif current is not None:
            sections[current].append(line)
    if not failed and not any(line.startswith(AGENT_SECTION + "packages") for line in text.splitlines()):
        failed = "the report has no package list (#portal-agent packages)"
    return "\n".join(sections["config-diff"]) + "\n", "\n".join(sections["packages"]) + "\n", failed


def etc_files(etc_changes, files):
    """{path: what is stored of it} (etcdiff.file_entry) for the changed paths read, and those never read."""
    out = {}
    for _, path in etc_changes:
        if etcdiff.never_read(path):
            out[path] = etcdiff.never_read_entry()
        elif path in files:
            out[path] = etcdiff.file_entry(path, *files[path])
    return out


def runtime_record(host, *, config_diff, package_output, files=None, at=None):
    """Stores one reading (the two commands' output, and the sides read of changed files, `files`: {path: (kind, image
    side, host side)}): a timeline event and a new row only when it changed. Only masked text is stored."""
    at = at or timezone.now()
    etc_changes, etc_total = parse_config_diff(config_diff)
    _, on_host = parse_packages(package_output)
    in_image = image_packages(host.booted_digest)
    added, changed, removed = compare_packages(on_host, in_image) if in_image is not None else ({}, {}, [])
    reading = {"digest": host.booted_digest, "etc_changes": etc_changes, "etc_total": etc_total,
               "packages_added": added, "packages_changed": changed, "packages_removed": removed,
               "image_packages_known": in_image is not None, "usr_overlay": (host.status or {}).get("usr_overlay") or "",
               "etc_files": etc_files(etc_changes, files or {})}
    fingerprint = hashlib.sha256(json.dumps(reading, sort_keys=True).encode()).hexdigest()
    with transaction.atomic():
        runtime, _ = HostRuntime.objects.select_for_update().get_or_create(host=host)
        if runtime.fingerprint == fingerprint:
            HostRuntime.objects.filter(pk=runtime.pk).update(read_at=at, error="")
            runtime.read_at, runtime.error = at, ""
            return runtime
        was_clean = not runtime.fingerprint or not runtime.has_drift
        for name, value in reading.items():
            setattr(runtime, name, value)
        runtime.read_at, runtime.changed_at, runtime.error, runtime.fingerprint = at, at, "", fingerprint
        runtime.has_changes = runtime.has_drift
        runtime.save()
        RuntimeChange.objects.filter(host=host).delete()
        RuntimeChange.objects.bulk_create(change_rows(host, runtime))
        if runtime.has_drift or not was_clean:
            HostEvent.objects.create(host=host, at=at, kind=EventKind.RUNTIME_CHANGED, summary=summary(runtime),
                                     digest=host.booted_digest,
                                     detail={"etc": etc_changes[:20], "etc_total": etc_total,
                                             "packages_added": sorted(added)[:20],
                                             "packages_changed": sorted(changed)[:20],
                                             "packages_removed": removed[:20]})
    return runtime


def change_rows(host, runtime):
    """The reading's changes as RuntimeChange rows (the fleet view counts them)."""
    rows = [RuntimeChange(host=host, kind=RuntimeChangeKind.ETC, name=path, detail=kind)
            for kind, path in runtime.etc_changes]
    rows += [RuntimeChange(host=host, kind=RuntimeChangeKind.PACKAGE_ADDED, name=name[:500], detail=version[:200])
             for name, version in runtime.packages_added.items()]
    rows += [RuntimeChange(host=host, kind=RuntimeChangeKind.PACKAGE_CHANGED, name=name[:500], detail=versions[0][:200])
             for name, versions in runtime.packages_changed.items()]
    rows += [RuntimeChange(host=host, kind=RuntimeChangeKind.PACKAGE_REMOVED, name=name[:500])
             for name in runtime.packages_removed]
    if runtime.usr_overlay:
        rows.append(RuntimeChange(host=host, kind=RuntimeChangeKind.OVERLAY, name="/usr", detail=runtime.usr_overlay))
    return rows


def compliance(host, runtime):
    """(the stage's word on runtime changes: allowed, warned or forbidden; whether this host breaks it). A host with no
    stage, or a stage with no policy, allows them."""
    policy = RuntimePolicy.objects.filter(stage_id=host.stage_id).first() if host.stage_id else None
    drift = policy.drift if policy is not None else RuntimeDrift.ALLOWED
    return drift, drift == RuntimeDrift.FORBIDDEN and runtime is not None and runtime.has_changes


RESET_UNDOES = ("the /usr overlay and every package installed into it (bootc usr-overlay, dnf install): the new "
                "deployment is the image's /usr, read-only")
RESET_KEEPS = ("files changed in /etc: bootc's three-way merge carries local /etc changes into every new deployment, "
               "so they stay. Fold them back into the image, or restore them from /usr/etc on the host. /var is kept "
               "as it is")


def summary(runtime):
    """One line: "3 packages not in the image, 5 files in /etc changed, /usr overlay active", or that nothing did."""
    parts = []
    if runtime.packages_added:
        parts.append(_count(len(runtime.packages_added), "package") + " not in the image")
    if runtime.packages_changed:
        parts.append(_count(len(runtime.packages_changed), "package") + " at another version than the image's")
    if runtime.packages_removed:
        parts.append(_count(len(runtime.packages_removed), "package") + " of the image removed")
    if runtime.etc_total:
        parts.append(_count(runtime.etc_total, "file") + " in /etc changed")
    if runtime.usr_overlay:
        parts.append(f"/usr overlay active ({runtime.usr_overlay})")
    return ", ".join(parts) if parts else "Nothing changed on the host since it booted its image."


def _count(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


def hosts_due(now=None, *, hours=None):
    """Hosts reached over SSH whose runtime was not read in the last `hours` (RUNTIME_READ_HOURS, default 1)."""
    now = now or timezone.now()
    hours = hours if hours is not None else setting("RUNTIME_READ_HOURS", 1)
    cutoff = now - timedelta(hours=hours)
    return (Host.objects.filter(is_bootc=True, mode=HostMode.SSH).exclude(host_key="")
            .exclude(runtime__read_at__gte=cutoff).values_list("pk", flat=True))
