"""Answers the orchestrator's probes (/health/live, /health/ready) and Prometheus's scrape (/metrics) before any other
middleware sees the request.

Probes arrive with whatever Host header the orchestrator uses (an address such as 127.0.0.1:8000) and over plain HTTP.
Placed first, this answers them before the ALLOWED_HOSTS check and the HTTPS redirect, neither of which a probe can
satisfy. The answers say only ok or not ok and never use the host, so skipping those checks exposes nothing. Prometheus
likewise scrapes each web replica by its internal address over plain HTTP; /metrics checks its own token or network
(`portal.metrics.allowed`) and never uses the host either.
"""

from django.shortcuts import render
from django.urls import resolve

from . import registry, views

PROBES = {
    "/health/live": views.health_live,
    "/health/live/": views.health_live,
    "/health/ready": views.health_ready,
    "/health/ready/": views.health_ready,
    "/metrics": views.metrics,
    "/metrics/": views.metrics,
}


def health_probes(get_response):
    def middleware(request):
        probe = PROBES.get(request.path_info)
        if probe is not None:
            return probe(request)
        return get_response(request)

    return middleware


def lean_paths(get_response):
    """Machine endpoints a feature registered as lean (`portal.registry.lean_path`) are resolved and answered here,
    after the probes and before sessions, users, CSRF, messages, CSP and the rest: they authenticate each request
    themselves (a bearer credential), set no cookie and render no page, and the full stack would cost several times
    their own work (hosts' agents report at up to 1,000 requests a second). Like the probes, they skip the host check
    and the HTTPS redirect: the proxy in front terminates TLS for them as for every other request."""

    def middleware(request):
        prefixes = registry.lean_paths()
        if prefixes and request.path_info.startswith(prefixes):
            match = resolve(request.path_info)
            return match.func(request, *match.args, **match.kwargs)
        return get_response(request)

    return middleware


def method_not_allowed_page(get_response):
    """A page instead of Django's empty 405 when a person opens an address that only takes a form's submission (a
    bookmarked or shared action URL, or one typed by hand): it says what the address is and links back. Answers to
    htmx, API clients and other methods stay as they are."""

    def middleware(request):
        response = get_response(request)
        if (response.status_code != 405 or response.content or request.method != "GET"
                or getattr(request, "htmx", False) or "text/html" not in request.headers.get("Accept", "text/html")):
            return response
        back = request.path.rstrip("/").rsplit("/", 1)[0] + "/"
        page = render(request, "405.html", {"back": back if back != "/" else "", "back_label": back}, status=405)
        page["Allow"] = response.get("Allow", "")
        return page

    return middleware
