"""The commands of `imp`, each a function of (client, args, out) that returns an exit code; `out` is the
`portal.cli.main.Output` that writes their answer as text or JSON. The parser that names them is in `main.py`."""

import getpass
import json
import sys
import time

from . import config, exits
from .client import ApiError, Client
from .follow import FollowTimeout, follow

FINISHED_RUN = ("succeeded", "failed", "cancelled")
PROMOTION_DONE = {"applied": exits.OK, "failed": exits.FAILED, "rejected": exits.FAILED, "withdrawn": exits.FAILED,
                  "superseded": exits.FAILED}

# --- helpers ---------------------------------------------------------------------------------------------------------


def _id(value):
    return value.get("id") if isinstance(value, dict) else value


def run_id_of(obj) -> int | None:
    run = obj.get("run")
    if isinstance(run, dict):
        return run.get("id")
    if isinstance(run, int):
        return run
    return obj.get("run_id")


def _deadline(args):
    return None if not getattr(args, "timeout", None) else time.monotonic() + args.timeout


def _expired(deadline):
    return deadline is not None and time.monotonic() >= deadline


def _short(digest):
    if not digest:
        return "-"
    algo, _, hexpart = str(digest).partition(":")
    return f"{algo}:{hexpart[:12]}" if hexpart else str(digest)[:19]


def _finish(client, out, args, *, started, url, label, lines, started_lines=None):
    """After a command started something with a run: show it (--wait and --follow unset), or wait for its run (the log
    streamed with --follow) and show it as it ended. The exit code says how it ended."""
    if not (args.wait or args.follow):
        out.result(started, started_lines or lines)
        return exits.OK
    try:
        status = _wait_run(client, out, args, run_id=run_id_of(started), poll=lambda: client.get(url).get("status"),
                           label=label)
    except _Timeout:
        out.error(f"{label} did not finish within {args.timeout:g} s")
        return exits.TIMEOUT
    out.result(client.get(url), lines)
    return exits.OK if status == "succeeded" else exits.FAILED


def _wait_run(client, out, args, *, run_id, poll, label):
    """Wait for a run to finish, streaming its log with --follow. Returns the final status (a string)."""
    deadline = _deadline(args)
    if args.follow and run_id is not None:
        try:
            status = follow(client, run_id, on_lines=out.log_lines, on_note=out.info, deadline=deadline,
                            poll=lambda: _run_status(client, run_id))
        except FollowTimeout:
            raise _Timeout(label) from None
        return status.get("status")
    interval = getattr(args, "interval", 2.0)
    while True:
        current = poll()
        if current in FINISHED_RUN:
            return current
        if _expired(deadline):
            raise _Timeout(label)
        time.sleep(interval)


def _run_status(client, run_id):
    run = client.get(f"/api/v1/runs/{run_id}/")
    return {"status": run.get("status"), "finished": run.get("status") in FINISHED_RUN}


class _Timeout(Exception):
    pass


def _team_and_name(value):
    team, _, name = value.rpartition("/")
    return (team or None), name


def _one(client, path, what, value, *, team=None, **filters):
    """The id of the one object named `value` (or `value` itself when it is a number), looked up by name."""
    if str(value).isdecimal():
        return int(value)
    slug, name = _team_and_name(value)
    items = list(client.each(path, name=name, team=slug or team, limit=20, **filters))
    exact = [i for i in items if i.get("name") == name]
    if not exact:
        raise ApiError(404, {"title": f"no {what} named {value!r}"})
    if len(exact) > 1:
        teams = ", ".join(sorted(str(i.get("team", {}).get("slug") if isinstance(i.get("team"), dict) else i.get("team"))
                                 for i in exact))
        raise ApiError(409, {"title": f"{len(exact)} {what}s are named {name!r} (teams {teams}): write TEAM/{name}"})
    return exact[0]["id"]


# --- commands --------------------------------------------------------------------------------------------------------


def cmd_login(args, out):
    url = (args.url or input("Portal URL: ")).strip().rstrip("/")
    if args.token_stdin:
        token = sys.stdin.readline().strip()
    else:
        token = getpass.getpass("API token (shown once when it was created): ").strip()
    if not url or not token:
        out.error("both the URL and the token are needed")
        return exits.USAGE
    if not url.startswith(("http://", "https://")):
        out.error(f"the portal URL must start with http:// or https://, not {url!r}")
        return exits.USAGE
    me = _me(Client(url, token))
    path = config.save(url=url, token=token)
    out.result({"config": str(path), **(me or {})},
               lambda d: [f"Signed in to {url} as {_who(d)}; saved to {path} (readable by you only)."])
    return exits.OK


def _me(client):
    """Who the token acts as: /api/v1/me/ where the portal has it, else the teams it sees (which also proves it works)."""
    try:
        return client.get("/api/v1/me/")
    except ApiError as exc:
        if exc.status != 404:
            raise
    teams = list(client.each("/api/v1/teams/", limit=100))
    return {"user": None, "teams": [{"slug": t.get("slug"), "role": t.get("role")} for t in teams]}


def _who(me):
    teams = ", ".join(f"{t['slug']} ({t.get('role') or '-'})" for t in me.get("teams") or []) or "no team"
    if me.get("user") is None:
        return f"a valid token; teams: {teams}"
    expiry = (me.get("token") or {}).get("expires_at") or "never"
    return f"{me['user']} (scopes: {', '.join(me.get('scopes') or []) or '-'}; teams: {teams}; expires {expiry})"


def cmd_whoami(client, args, out):
    me = _me(client)
    out.result(me, lambda d: [_who(d)])
    return exits.OK


def _build_lines(build):
    reason = f" ({build.get('reason')})" if build.get("status") == "failed" and build.get("reason") else ""
    return [f"build {build.get('id')}: {build.get('definition')} #{build.get('number')} {build.get('platform', '')} "
            f"{build.get('status')}{reason}  digest {_short(build.get('digest'))}".replace("  ", " ")]


def _definition_id(client, reference):
    """The id of the definition named by `reference` (an id, team/name or name), looked up in the definitions list."""
    if str(reference).isdecimal():
        return int(reference)
    slug, name = _team_and_name(reference)
    found = [d for d in client.each("/api/v1/definitions/", team=slug, q=name, limit=200) if d.get("name") == name]
    if len(found) != 1:
        raise ApiError(404 if not found else 409, {"title": f"no image definition {reference!r}" if not found else
                                                   f"{len(found)} definitions are named {name!r}: write TEAM/{name}"})
    return found[0]["id"]


def cmd_build(client, args, out):
    body = {"definition": args.definition}
    if args.containerfile is not None:
        if args.revision is not None:
            out.error("give --containerfile (a new revision) or --revision, not both")
            return exits.USAGE
        try:
            with open(args.containerfile, encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeError) as exc:
            out.error(f"cannot read {args.containerfile}: {exc}")
            return exits.USAGE
        definition_id = _definition_id(client, args.definition)
        revision = client.post(f"/api/v1/definitions/{definition_id}/revisions/",
                               {"containerfile": text, "message": args.message or ""})
        out.info(f"saved revision {revision.get('number')} of {args.definition}")
        body["definition"], args.revision = definition_id, revision.get("number")
    if args.revision is not None:
        body["revision"] = args.revision
    if args.platform:
        body["platform"] = args.platform
    created = client.post("/api/v1/builds/", body)
    builds = created.get("builds", created.get("items")) if isinstance(created, dict) else created
    if builds is None:
        builds = [created]
    for build in builds:
        out.info(f"started build {build['id']}: {build.get('definition')} #{build.get('number')} "
                 f"({build.get('platform', '')}) {build.get('url', '')}".rstrip())
    if not (args.wait or args.follow):
        out.result(created, lambda d: [])
        return exits.OK
    finished = []
    code = exits.OK
    for build in builds:
        try:
            _wait_run(client, out, args, run_id=run_id_of(build),
                      poll=lambda b=build: client.get(f"/api/v1/builds/{b['id']}/").get("status"),
                      label=f"build {build['id']}")
        except _Timeout:
            out.error(f"build {build['id']} did not finish within {args.timeout:g} s")
            return exits.TIMEOUT
        done = client.get(f"/api/v1/builds/{build['id']}/")
        finished.append(done)
        if done.get("status") != "succeeded":
            code = exits.FAILED
    out.result(finished[0] if len(finished) == 1 else {"builds": finished},
               lambda d: [line for b in finished for line in _build_lines(b)])
    return code


def cmd_build_show(client, args, out):
    build = client.get(f"/api/v1/builds/{args.id}/")
    out.result(build, _build_lines)
    return exits.OK


def cmd_runs_show(client, args, out):
    run = client.get(f"/api/v1/runs/{args.id}/")
    out.result(run, lambda d: [f"run {d.get('id')}: {d.get('kind')} {d.get('status')} "
                               f"{d.get('exit_reason') or ''}".rstrip()])
    return exits.OK


def cmd_runs_follow(client, args, out):
    args.follow = True
    try:
        status = _wait_run(client, out, args, run_id=args.id, poll=None, label=f"run {args.id}")
    except _Timeout:
        out.error(f"run {args.id} did not finish within {args.timeout:g} s")
        return exits.TIMEOUT
    run = client.get(f"/api/v1/runs/{args.id}/")
    out.result(run, lambda d: [f"run {args.id} {status}"])
    return exits.OK if status == "succeeded" else exits.FAILED


def _promotion_lines(p):
    stage = p.get("stage") or p.get("target_stage")
    stage = stage.get("name") if isinstance(stage, dict) else stage
    note = f" - {p['status_note']}" if p.get("status_note") else ""
    return [f"promotion {p.get('id')}: {p.get('definition')} {_short(p.get('digest'))} to {stage}: {p.get('status')}{note}"]


def _wait_promotion(client, out, args, promotion):
    deadline = _deadline(args)
    last = None
    while promotion.get("status") not in PROMOTION_DONE:
        if promotion.get("status") != last:
            last = promotion.get("status")
            out.info(_promotion_lines(promotion)[0])
        if _expired(deadline):
            out.error(f"promotion {promotion['id']} is still {promotion.get('status')} after {args.timeout:g} s")
            return promotion, exits.TIMEOUT
        time.sleep(args.interval)
        promotion = client.get(f"/api/v1/promotions/{promotion['id']}/")
    return promotion, PROMOTION_DONE[promotion["status"]]


def cmd_promote(client, args, out):
    if bool(args.build) == bool(args.digest):
        out.error("give the image as --build ID or as --digest sha256:...")
        return exits.USAGE
    body = {"definition": args.definition, "stage": args.to, "reason": args.reason}
    if args.build:
        body["build"] = args.build
    else:
        body["digest"] = args.digest
    if args.emergency:
        body["emergency"], body["emergency_reason"] = True, args.emergency
    if args.roll_forward:
        body["roll_forward"] = True
    promotion = client.post("/api/v1/promotions/", body)
    code = exits.OK
    if args.wait:
        promotion, code = _wait_promotion(client, out, args, promotion)
    out.result(promotion, _promotion_lines)
    return code


def cmd_rollback(client, args, out):
    body = {"definition": args.definition, "stage": args.stage, "digest": args.digest, "reason": args.reason}
    promotion = client.post("/api/v1/rollbacks/", body)
    code = exits.OK
    if args.wait:
        promotion, code = _wait_promotion(client, out, args, promotion)
    out.result(promotion, _promotion_lines)
    return code


def _decide(client, args, out, verb):
    promotion = client.get(f"/api/v1/promotions/{args.id}/")
    digest = args.digest or promotion.get("digest")
    if args.digest and args.digest != promotion.get("digest"):
        out.error(f"promotion {args.id} is for {promotion.get('digest')}, not {args.digest}: nothing was recorded")
        return exits.REFUSED
    body = {"digest": digest, "comment": args.comment or ""}
    if verb == "approve" and args.confirm:
        body["confirm"] = args.confirm
    decided = client.post(f"/api/v1/promotions/{args.id}/{verb}/", body)
    code = exits.OK
    if getattr(args, "wait", False):
        decided, code = _wait_promotion(client, out, args, decided)
    out.result(decided, _promotion_lines)
    return code


def cmd_approve(client, args, out):
    return _decide(client, args, out, "approve")


def cmd_reject(client, args, out):
    if not args.comment:
        out.error("say why with --comment: the requester reads it")
        return exits.USAGE
    return _decide(client, args, out, "reject")


def cmd_promotions_list(client, args, out):
    items = list(client.each("/api/v1/promotions/", status=args.status, stage=args.stage, team=args.team,
                             definition=args.definition, limit=args.limit))
    out.result({"items": items}, lambda d: [line for p in items for line in _promotion_lines(p)] or ["no promotions"])
    return exits.OK


def cmd_promotions_show(client, args, out):
    promotion = client.get(f"/api/v1/promotions/{args.id}/")
    out.result(promotion, _promotion_lines)
    return exits.OK


def _disk_image_lines(d):
    lines = [f"disk image {d.get('id')}: {d.get('definition')} {_short(d.get('digest'))} "
             f"{','.join(d.get('types') or [])}: {d.get('status')}"]
    for artifact in d.get("artifacts") or []:
        lines.append(f"  {artifact.get('type')}: {artifact.get('size')} bytes sha256 {artifact.get('sha256', '')[:12]} "
                     f"{artifact.get('download_url', '')}".rstrip())
    return lines


def cmd_disk_image_create(client, args, out):
    body = {"types": args.type}
    if args.build:
        body["build"] = args.build
    if args.stage:
        body["stage"], body["definition"] = args.stage, args.definition
    if not args.build and not args.stage:
        out.error("give the image as --build ID, or as --stage NAME --definition NAME")
        return exits.USAGE
    if args.config:
        body["configuration"] = args.config
    if args.rootfs:
        body["rootfs"] = args.rootfs
    disk_image = client.post("/api/v1/disk-images/", body)
    out.info(f"started disk image {disk_image['id']} ({', '.join(disk_image.get('types') or args.type)})")
    return _finish(client, out, args, started=disk_image, url=f"/api/v1/disk-images/{disk_image['id']}/",
                   label=f"disk image {disk_image['id']}", lines=_disk_image_lines)


def cmd_disk_image_show(client, args, out):
    out.result(client.get(f"/api/v1/disk-images/{args.id}/"), _disk_image_lines)
    return exits.OK


def cmd_disk_image_list(client, args, out):
    items = list(client.each("/api/v1/disk-images/", team=args.team, definition=args.definition, limit=args.limit))
    out.result({"items": items}, lambda d: [line for i in items for line in _disk_image_lines(i)] or ["no disk images"])
    return exits.OK


def _host_lines(h):
    state = h.get("state")
    drift = " DRIFTING" if h.get("drifting") else ""
    stage = h.get("stage")
    stage = stage.get("name") if isinstance(stage, dict) else stage
    return [
        f"host {h.get('name')} ({h.get('team', {}).get('slug') if isinstance(h.get('team'), dict) else h.get('team')}, "
        f"id {h.get('id')}): {state}{drift}, stage {stage or '-'}",
        f"  booted   {_short(h.get('booted_digest'))} {h.get('booted_version') or ''}".rstrip(),
        f"  staged   {_short(h.get('staged_digest'))} {h.get('staged_version') or ''}".rstrip(),
        f"  rollback {_short(h.get('rollback_digest'))} {h.get('rollback_version') or ''}".rstrip(),
        f"  expected {_short(h.get('expected_digest'))}",
    ]


def cmd_host_status(client, args, out):
    host_id = _one(client, "/api/v1/hosts/", "host", args.host, team=args.team)
    host = client.get(f"/api/v1/hosts/{host_id}/")
    if args.wait_for:
        deadline = _deadline(args)
        field = "staged_digest" if args.staged else "booted_digest"
        while host.get(field) != args.wait_for:
            if _expired(deadline):
                out.error(f"host {host.get('name')} has {field.replace('_', ' ')} {_short(host.get(field))}, not "
                          f"{_short(args.wait_for)}, after {args.timeout:g} s")
                out.result(host, _host_lines)
                return exits.TIMEOUT
            time.sleep(args.interval)
            host = client.get(f"/api/v1/hosts/{host_id}/")
    out.result(host, _host_lines)
    return exits.OK


def cmd_host_list(client, args, out):
    items = list(client.each("/api/v1/hosts/", team=args.team, stage=args.stage, state=args.state, limit=args.limit))
    out.result({"items": items}, lambda d: [_host_lines(h)[0] for h in items] or ["no hosts"])
    return exits.OK


def cmd_host_timeline(client, args, out):
    host_id = _one(client, "/api/v1/hosts/", "host", args.host, team=args.team)
    items = list(client.each(f"/api/v1/hosts/{host_id}/timeline/", limit=args.limit))
    out.result({"items": items}, lambda d: [f"{e.get('at')} {e.get('kind')}: {e.get('summary')}" for e in items]
               or ["nothing on the timeline yet"])
    return exits.OK


def _host_action(client, args, out, kind):
    host_id = _one(client, "/api/v1/hosts/", "host", args.host, team=args.team)
    body = {"kind": kind}
    if getattr(args, "image", None):
        body["image"] = args.image
    action = client.post(f"/api/v1/hosts/{host_id}/actions/", body)
    out.info(f"host action {action.get('id')}: {action.get('kind')} on {args.host} ({action.get('status')})")
    return _finish(client, out, args, started=action, url=f"/api/v1/host-actions/{action['id']}/",
                   label=f"host action {action['id']}", lines=_host_action_lines, started_lines=lambda a: [])


def _host_action_lines(action):
    return [f"host action {action.get('id')}: {action.get('kind')} {action.get('status')} "
            f"{action.get('outcome') or ''}".rstrip()]


def cmd_host_upgrade(client, args, out):
    return _host_action(client, args, out, "upgrade_check" if args.check else
                        ("upgrade_apply" if args.apply else "upgrade_stage"))


def cmd_host_rollback(client, args, out):
    return _host_action(client, args, out, "rollback_apply" if args.apply else "rollback")


def cmd_host_switch(client, args, out):
    return _host_action(client, args, out, "switch_apply" if args.apply else "switch")


def cmd_host_reboot(client, args, out):
    return _host_action(client, args, out, "reboot")


def _event_line(e):
    team = (e.get("team") or {}).get("slug") or "-"
    subject = (e.get("subject") or {}).get("name") or ""
    return f"{e.get('time')} {e.get('type')} {team} {subject}".rstrip()


def cmd_watch(client, args, out):
    """Poll the event list, printing each event once, oldest first; --count stops after that many."""
    after = args.after
    seen = 0
    deadline = _deadline(args)
    first = True
    while True:
        params = {"after": after, "team": args.team, "type": args.type or None, "limit": 100}
        page = client.get("/api/v1/events/", **params)
        items = page.get("items", [])
        if first and after is None and not args.recent:
            items = []  # without --after or --recent: only what happens from now on
        first = False
        for event in items:
            if args.json:
                out.stdout.write(json.dumps(event, sort_keys=True) + "\n")
            else:
                out.stdout.write(_event_line(event) + "\n")
            out.stdout.flush()
            seen += 1
            if args.count and seen >= args.count:
                return exits.OK
        after = page.get("last") or after
        if _expired(deadline):
            return exits.OK if not args.count else exits.TIMEOUT
        time.sleep(args.interval)
