"""What a build fetches over the network, and the egress policy's verdict on each (`portal.egress`).

A build reaches: the registry its image is pushed to, the base images of its FROM lines, the images COPY --from and
RUN --mount=...,from= read, the URLs of ADD (buildah downloads them itself, on the builder's network), and the git
remote of its context. podman, buildah and git resolve names themselves, so the policy is checked when a definition or
revision is saved (a form error at once) and again on the worker just before the build (docs/security.md#egress names
what remains between that check and the tools' own lookups).

Each function returns sentences for a person (empty when everything is allowed).
"""

from __future__ import annotations

from portal import egress

from .containerfile import ParseError, parse, remote_sources


def containerfile_refusals(text: str, build_args: dict[str, str] | None = None) -> list[str]:
    """`line N: ...` for every FROM, COPY --from, RUN --mount or ADD source the policy refuses."""
    try:
        parsed = parse(text)
    except ParseError:
        return []  # validation reports it
    refusals = []
    for source in remote_sources(parsed, build_args):
        what = f"line {source.line}: {source.instruction} {source.reference}"
        try:
            if source.kind == "image":
                egress.check_image(source.reference, what=what)
            else:
                egress.check_url(source.reference, what=what)
        except egress.EgressRefused as exc:
            refusals.append(str(exc))
    return refusals


def repository_refusal(repository: str) -> str:
    """Why the registry of `repository` (registry/path) may not be reached, or ""."""
    try:
        egress.check_image(repository, what=f"The registry of {repository}")
    except egress.EgressRefused as exc:
        return str(exc)
    return ""


def git_refusal(url: str) -> str:
    """Why the git remote `url` may not be reached, or "" (file:// URLs name no host: BUILD_GIT_URL_SCHEMES governs
    them)."""
    try:
        egress.check_url(url, what="The repository URL")
    except egress.EgressRefused as exc:
        return str(exc)
    return ""
