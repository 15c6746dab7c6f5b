"""Answers the orchestrator's probes (/health/live, /health/ready) before any other middleware sees the request.

Probes arrive with whatever Host header the orchestrator uses (an address such as 127.0.0.1:8000) and over plain HTTP.
Placed first, this answers them before the ALLOWED_HOSTS check and the HTTPS redirect, neither of which a probe can
satisfy. The answers say only ok or not ok and never use the host, so skipping those checks exposes nothing.
"""

from . import views

PROBES = {
    "/health/live": views.health_live,
    "/health/live/": views.health_live,
    "/health/ready": views.health_ready,
    "/health/ready/": views.health_ready,
}


def health_probes(get_response):
    def middleware(request):
        probe = PROBES.get(request.path_info)
        if probe is not None:
            return probe(request)
        return get_response(request)

    return middleware
