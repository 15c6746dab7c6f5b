"""The endpoints a host's agent talks to (`hosts/agent/portal-agent.sh`): no session, no CSRF token; each request
carries the host's own credential (`Authorization: Bearer imh_...`), except enrollment, which carries the enrollment
token. Answers are small flat JSON objects a shell script reads with sed.

    POST /agent/v1/enroll                    {"token": "ime_...", "name": "<hostname>"} -> {"credential": "imh_..."}
    POST /agent/v1/status                    body: `bootc status --format=json` -> {"status": "unchanged"|"changed", ...}
    POST /agent/v1/runtime                   body: what changed since boot (text: config-diff, packages) -> {"ok": true}
    POST /agent/v1/actions/next              -> {"action": id, "kind": ..., "image": ...} or {"action": null}
    POST /agent/v1/actions/<id>/log          body: output so far (text) -> {"ok": true}
    POST /agent/v1/actions/<id>/finish       ?exit=N&rebooting=0|1, body: the rest of the output -> {"status": ...}

Refusals are 4xx with {"error": reason}: 401 for an unknown credential or token, 403 for a host that waits for an
admin's approval or a used-up, expired or revoked token, 413 for a status over HOSTS_MAX_STATUS_BYTES (a runtime
report over MAX_RUNTIME_BYTES), 422 for a
status that is not a bootc status document (the host is then marked "status unreadable"), 429 over the per-host rate
(HOSTS_AGENT_RATE_LIMIT_PER_HOST) or the per-address enrollment rate.
"""

import json

from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from portal import ratelimit

from . import reportin

MAX_LOG_BYTES = 256 * 1024
MAX_RUNTIME_BYTES = 4 * 1024 * 1024  # thousands of changed paths and packages; the reading keeps the first ones


def _error(status, message):
    return JsonResponse({"error": message}, status=status)


def _bearer(request):
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else ""


def _limited(scope, identity, setting_name, what):
    rate = ratelimit.parse_rate(getattr(settings, setting_name))
    wait = ratelimit.hit(scope, identity, rate)
    return ratelimit.too_many_requests(wait, f"Too many requests: at most {rate} {what}.") if wait else None


def agent_view(view):
    """Authenticate the host by its credential; refuse hosts that wait for approval; count the per-host rate."""

    @csrf_exempt
    @require_POST
    def wrapped(request, *args, **kwargs):
        agent = reportin.agent_authenticate(_bearer(request))
        if agent is None:
            response = _error(401, "Send this host's credential: 'Authorization: Bearer imh_...' (the agent gets it "
                                   "when it enrolls).")
            response["WWW-Authenticate"] = 'Bearer realm="image-mode-portal-agent"'
            return response
        if not agent.approved:
            return _error(403, f"{agent.name} waits for an admin's approval on the portal; its reports are read once "
                               "it is approved.")
        limited = _limited("agent:host", agent.pk, "HOSTS_AGENT_RATE_LIMIT_PER_HOST", "per host")
        if limited:
            return limited
        try:
            return view(request, agent, *args, **kwargs)
        except reportin.AgentError as exc:
            return _error(exc.status, str(exc))

    return wrapped


@csrf_exempt
@require_POST
@ratelimit.rate_limited("agent-enroll", per_address="HOSTS_AGENT_ENROLL_RATE_LIMIT_PER_ADDRESS")
def enroll(request):
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return _error(400, 'Send JSON: {"token": "ime_...", "name": "<hostname>"}.')
    if not isinstance(data, dict) or not isinstance(data.get("token"), str) or not isinstance(data.get("name"), str):
        return _error(400, 'Send JSON: {"token": "ime_...", "name": "<hostname>"}.')
    try:
        host, credential = reportin.host_enroll(secret=data["token"], name=data["name"], request=request)
    except reportin.EnrollmentRefused as exc:
        return _error(exc.status, str(exc))
    return JsonResponse({"credential": credential, "host": host.pk, "approved": host.approved_at is not None},
                        status=201)


@agent_view
def status(request, agent):
    cap = settings.HOSTS_MAX_STATUS_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    raw = request.read(cap + 1) if declared <= cap else request.read(cap)
    if declared > cap or len(raw) > cap:
        reason = (f"The status is larger than {cap} bytes (HOSTS_MAX_STATUS_BYTES); it is not a bootc status "
                  "document.")
        reportin.host_report_unreadable(agent=agent, raw=raw[:cap], reason=reason)
        return _error(413, reason)
    if not raw:
        return _error(400, "Send the output of `bootc status --format=json` as the body.")
    result = reportin.host_report(agent=agent, raw=raw)
    if result.error:
        return _error(422, result.error)
    return JsonResponse({"status": "changed" if result.changed else "unchanged", "state": result.state,
                         "actions": int(agent.actions_waiting)})


@agent_view
def runtime(request, agent):
    raw = request.read(MAX_RUNTIME_BYTES + 1)
    if len(raw) > MAX_RUNTIME_BYTES:
        return _error(413, f"The runtime report is larger than {MAX_RUNTIME_BYTES} bytes.")
    found = reportin.host_runtime_report(agent=agent, text=raw.decode("utf-8", "replace"))
    return JsonResponse({"ok": not found.error, "changed_at": found.changed_at.isoformat() if found.changed_at else None})


@agent_view
def action_next(request, agent):
    action = reportin.agent_action_take(agent=agent)
    if action is None:
        return JsonResponse({"action": None})
    return JsonResponse({"action": action.pk, "kind": action.kind, "image": action.image})


@agent_view
def action_log(request, agent, pk):
    reportin.agent_action_log(agent=agent, action_id=pk, text=request.read(MAX_LOG_BYTES).decode("utf-8", "replace"))
    return JsonResponse({"ok": True})


@agent_view
def action_finish(request, agent, pk):
    try:
        exit_status = int(request.GET.get("exit", ""))
    except ValueError:
        return _error(400, "Say how the command ended: ?exit=<its exit status>.")
    rebooting = request.GET.get("rebooting") in ("1", "true", "yes")
    output = request.read(MAX_LOG_BYTES).decode("utf-8", "replace")
    action = reportin.agent_action_finish(agent=agent, action_id=pk, exit_status=exit_status, rebooting=rebooting,
                                          output=output)
    action.run.refresh_from_db()
    return JsonResponse({"status": action.run.status})
