"""Pages of the supply chain: a team's signing keys and what each stage requires, a build's signatures, SBOM and
vulnerabilities, the approval card's trust fragment, and the advisories. Every object comes through its access helper
(`builds.access`, `builds.releases.access`, `.access`); every change through `.services`."""

import hashlib
import re
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Q
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header
from django.views.decorators.http import require_GET, require_POST

from builds.access import get_build_for_user
from builds.models import Build
from builds.releases.access import get_promotion_for_user, get_stage_for_user
from builds.releases.gate import approval_refusal, current_entries
from portal import objectstore, registry
from portal.access import can, get_team_for_user
from portal.forms import add_service_errors
from portal.models import Action
from portal.views import error_text

from . import feeds, gate, sbom, services, vulns
from .access import get_signing_key_for_user
from .forms import (
    FeedImportForm,
    FeedSourceForm,
    KeyGenerateForm,
    KeyImportForm,
    OverrideForm,
    SignForm,
    StagePolicyForm,
    StageVulnerabilityForm,
)
from .models import (
    Advisory,
    AdvisoryFeed,
    AffectedPackage,
    BuildSbom,
    KeyRotation,
    Signature,
    SigningKey,
    StageSigningPolicy,
    StageVulnerabilityPolicy,
)

AFFECTED_BUILDS_SHOWN = 200
SBOM_CONTENT_TYPE = "application/vnd.cyclonedx+json"

# --- Keys and stage policies -----------------------------------------------------------------------------------------


@login_required
def keys(request, slug):
    team = get_team_for_user(request.user, slug)
    return _render_keys(request, team)


def _render_keys(request, team, *, generate_form=None, import_form=None, status=200):
    is_admin = can(request.user, team, Action.ADMIN)
    policies = {p.stage_id: p for p in StageSigningPolicy.objects.filter(stage__team=team).select_related(
        "key", "entry_key")}
    stages = []
    for stage in team.stages.all():
        policy = policies.get(stage.pk)
        forms = None
        if is_admin:
            forms = (StagePolicyForm(team=team, initial={"key": getattr(policy, "key", None)}, prefix=f"stage{stage.pk}"),
                     StagePolicyForm(team=team, initial={"key": getattr(policy, "entry_key", None)},
                                     prefix=f"entry{stage.pk}", empty_label="Signs nothing"))
        snippet = (services.HOST_TRUST_SNIPPET.format(stage=stage.name, key=policy.host_key.name)
                   if policy is not None and policy.host_key is not None else None)
        stages.append((stage, policy, forms, snippet))
    refusing = {p.stage_id: p for p in StageVulnerabilityPolicy.objects.filter(stage__team=team)}
    cve_stages = [(stage, refusing.get(stage.pk),
                   StageVulnerabilityForm(initial={"refuse_from": getattr(refusing.get(stage.pk), "refuse_from", "")},
                                          prefix=f"cve{stage.pk}") if is_admin else None)
                  for stage, *_ in stages]
    return render(request, "supplychain/keys.html", {
        "team": team, "is_admin": is_admin, "stages": stages, "cve_stages": cve_stages,
        "keys": SigningKey.objects.filter(team=team).select_related("created_by"),
        "rotating": {r.old_key_id: r for r in KeyRotation.objects.open().filter(old_key__team=team)
                     .select_related("new_key")},
        "generate_form": generate_form or KeyGenerateForm(), "import_form": import_form or KeyImportForm(),
    }, status=status)


@login_required
@require_POST
def key_generate(request, slug):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    form = KeyGenerateForm(request.POST)
    if form.is_valid():
        try:
            key = services.signing_key_generate(team=team, user=request.user, name=form.cleaned_data["name"],
                                                kind=form.cleaned_data["kind"], request=request)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Generated the {key.kind} signing key {key} ({key.short_fingerprint}).")
            return redirect("supplychain:keys", slug=team.slug)
    return _render_keys(request, team, generate_form=form, status=400)


@login_required
@require_POST
def key_import(request, slug):
    team = get_team_for_user(request.user, slug, action=Action.ADMIN)
    form = KeyImportForm(request.POST)
    if form.is_valid():
        try:
            key = services.signing_key_import(team=team, user=request.user, name=form.cleaned_data["name"],
                                              private_pem=form.cleaned_data["private_key"],
                                              passphrase=form.cleaned_data["passphrase"], request=request)
        except ValidationError as exc:
            add_service_errors(form, exc)
        else:
            messages.success(request, f"Imported the signing key {key} ({key.short_fingerprint}).")
            return redirect("supplychain:keys", slug=team.slug)
    return _render_keys(request, team, import_form=form, status=400)


@login_required
@require_GET
def key_public(request, pk):
    key = get_signing_key_for_user(request.user, pk)
    response = HttpResponse(key.public_key, content_type="application/pgp-keys" if key.kind == "gpg"
                            else "application/x-pem-file")
    extension = "asc" if key.kind == "gpg" else "pub"
    response["Content-Disposition"] = f'attachment; filename="{key.team.slug}-{key.name}.{extension}"'
    return response


@login_required
@require_POST
def key_retire(request, pk):
    key = get_signing_key_for_user(request.user, pk, action=Action.ADMIN)
    try:
        services.signing_key_retire(key=key, user=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"Retired {key}: it signs nothing more.")
    return redirect("supplychain:keys", slug=key.team.slug)


@login_required
@require_POST
def key_sign_new_builds(request, pk):
    key = get_signing_key_for_user(request.user, pk, action=Action.ADMIN)
    on = request.POST.get("on") == "1"
    try:
        services.signing_key_sign_new_builds(key=key, user=request.user, on=on, request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"{key} signs every new build from now on." if on
                         else f"{key} no longer signs new builds by itself.")
    return redirect("supplychain:keys", slug=key.team.slug)


@login_required
@require_POST
def stage_policy(request, pk):
    stage = get_stage_for_user(request.user, pk, action=Action.ADMIN)
    entry = request.POST.get("entry") == "1"
    form = StagePolicyForm(request.POST, team=stage.team, prefix=f"{'entry' if entry else 'stage'}{stage.pk}")
    if not form.is_valid():
        messages.error(request, "Pick one of the team's active keys, or none.")
        return redirect("supplychain:keys", slug=stage.team.slug)
    key = form.cleaned_data["key"]
    try:
        services.stage_signing_policy_set(stage=stage, key=key, user=request.user, request=request, entry=entry)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        if entry:
            messages.success(request, f"{stage.name} signs every digest promoted into it with {key}; its hosts verify "
                             f"{key}." if key else f"{stage.name} signs nothing as digests enter it now.")
        else:
            messages.success(request, f"{stage.name} now takes only digests signed with {key}." if key
                             else f"{stage.name} takes digests without a signature now.")
    return redirect("supplychain:keys", slug=stage.team.slug)


@login_required
@require_POST
def stage_vulnerability_policy(request, pk):
    stage = get_stage_for_user(request.user, pk, action=Action.ADMIN)
    form = StageVulnerabilityForm(request.POST, prefix=f"cve{stage.pk}")
    if not form.is_valid():
        messages.error(request, "Pick a severity, or none.")
        return redirect("supplychain:keys", slug=stage.team.slug)
    refuse_from = form.cleaned_data["refuse_from"] or None
    try:
        services.stage_vulnerability_policy_set(stage=stage, refuse_from=refuse_from, user=request.user,
                                                request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"{stage.name} refuses images with {refuse_from} or worse vulnerabilities, unless an "
                         "approver overrides it." if refuse_from else f"{stage.name} refuses no image for its "
                         "vulnerabilities now.")
    return redirect(reverse("supplychain:keys", args=[stage.team.slug]) + "#vulnerability-policies")


@login_required
@require_POST
def promotion_override(request, pk):
    """An approver lets the promotion's digest in despite the vulnerabilities its stage refuses, with a reason."""
    promotion = get_promotion_for_user(request.user, pk)
    form = OverrideForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Say why this image may go in despite its vulnerabilities.")
        return redirect(promotion.get_absolute_url())
    try:
        override = services.vulnerability_override(promotion=promotion, user=request.user,
                                                   reason=form.cleaned_data["reason"], request=request)
    except ValidationError as exc:
        messages.error(request, f"Nothing was recorded: {error_text(exc)}")
    else:
        messages.success(request, f"You overrode {', '.join(override.advisories)} for this request; it can be "
                                  "approved now.")
    return redirect(promotion.get_absolute_url())


@login_required
@require_GET
def stage_host_trust(request, pk, name):
    """policy.json or the registries.d entry for hosts that track the stage, as a download."""
    stage = get_stage_for_user(request.user, pk)
    files = services.host_trust_files(stage=stage)
    if name not in files:
        raise Http404("This stage requires no signature, or there is no such file.")
    content_type = "application/json" if name.endswith(".json") else "application/yaml"
    response = HttpResponse(files[name], content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


LOOKASIDE_PATH_RE = re.compile(r"^[a-z0-9._/-]+@sha256=[0-9a-f]{64}/signature-[1-9][0-9]{0,3}$")


@require_GET
def lookaside(request, path):
    """GPG signatures for hosts, read-only and without a login (a host has none): what containers/image on a host reads
    through `lookaside: <SITE_URL>/lookaside` in registries.d. Only signature files, by their exact shape."""
    if not LOOKASIDE_PATH_RE.match(path) or "/../" in f"/{path}/" or "//" in path:
        raise Http404("No such signature.")
    base = Path(settings.SUPPLY_CHAIN_LOOKASIDE_DIR).resolve()
    file = (base / path).resolve()
    if base not in file.parents or not file.is_file():
        raise Http404("No such signature.")
    return FileResponse(file.open("rb"), content_type="application/octet-stream")


# --- A build ---------------------------------------------------------------------------------------------------------


def _build_context(request, build):
    team = build.definition.team
    findings = vulns.findings_for(build)
    return {
        "build": build, "definition": build.definition, "team": team,
        "signatures": Signature.objects.filter(build=build).select_related("key", "run", "requested_by"),
        "can_sign": can(request.user, team, Action.DEVELOP) and build.succeeded,
        "sign_form": SignForm(team=team), "findings": findings, "severities": vulns.severity_counts(findings),
        "feeds": AdvisoryFeed.objects.count(),
    }


@login_required
@require_GET
def build_supply_chain(request, pk):
    build = get_build_for_user(request.user, pk)
    return render(request, "supplychain/build.html", _build_context(request, build))


@login_required
@require_GET
def build_card(request, pk):
    """The build page's card (fragment "build.supply_chain"): signatures and vulnerabilities in short."""
    build = get_build_for_user(request.user, pk)
    return render(request, "supplychain/_build_card.html", _build_context(request, build))


@login_required
@require_POST
def build_sign(request, pk):
    build = get_build_for_user(request.user, pk, action=Action.DEVELOP)
    form = SignForm(request.POST, team=build.definition.team)
    if not form.is_valid():
        messages.error(request, "Pick one of the team's active signing keys.")
        return redirect("supplychain:build", pk=build.pk)
    try:
        signature = services.signature_request(build=build, key=form.cleaned_data["key"], user=request.user,
                                               request=request)
    except ValidationError as exc:
        messages.error(request, error_text(exc))
    else:
        messages.success(request, f"Signing {build.short_digest} with {signature.key}: follow its run.")
    return redirect("supplychain:build", pk=build.pk)


@login_required
@require_GET
def build_sbom(request, pk):
    """The build's SBOM, from object storage the way disk images download (a presigned URL, the proxy's disk, or
    streamed under `make run`: `portal.objectstore`). A build whose SBOM is not stored (it succeeded before SBOMs were
    stored, or the store failed when it succeeded) gets the same document made from its package list, and nothing is
    written: a GET changes nothing. `manage.py sbom_store_missing` stores those."""
    build = get_build_for_user(request.user, pk)
    if not build.succeeded:
        raise Http404("This build pushed no image, so it has no SBOM.")
    if build.image_deleted_at is not None:
        raise Http404("Retention deleted this build's image, and its SBOM with it.")
    stored = BuildSbom.objects.filter(build=build).select_related("build__definition").first()
    if stored is None:
        return _sbom_made_now(build)
    headers = {**_sbom_headers(stored.filename, stored.sha256), "Content-Length": str(stored.size)}
    try:
        response = objectstore.download_response(stored.file.storage, stored.file.name, start=0, end=stored.size - 1,
                                                 status=200, content_type=SBOM_CONTENT_TYPE,
                                                 filename=stored.filename, headers=headers)
    except objectstore.StorageUnavailable as exc:
        return HttpResponse(f"{exc}\n", status=503, content_type="text/plain; charset=utf-8")
    if response is None:
        raise Http404("This SBOM's object is missing from object storage.")
    return response


def _sbom_made_now(build):
    """The SBOM of a build that has none stored, made from its package list (the stored one says exactly the same)."""
    data = sbom.sbom_json(build).encode()
    return HttpResponse(data, content_type=SBOM_CONTENT_TYPE,
                        headers=_sbom_headers(BuildSbom(build=build).filename, hashlib.sha256(data).hexdigest()))


def _sbom_headers(filename, sha256):
    """An SBOM download's headers, stored or made now: an attachment, never cached by a proxy or sniffed, with its
    checksum."""
    return {"Content-Disposition": content_disposition_header(True, filename), "Cache-Control": "private, no-transform",
            "X-Content-Type-Options": "nosniff", "X-Checksum-Sha256": sha256}


# --- The approval card -----------------------------------------------------------------------------------------------


@login_required
@require_GET
def promotion_trust(request, pk):
    """The approval card's fragment ("promotion.trust"): what the target stage requires, who signed the digest and when;
    and the vulnerabilities the promotion adds and removes against what the stage holds now."""
    promotion = get_promotion_for_user(request.user, pk)
    summary = services.signature_summary(stage=promotion.target_stage, digest=promotion.digest)
    proposed = {(f.advisory.identifier, f.package): f for f in vulns.findings_for(promotion.build)}
    held = current_entries([promotion.target_stage], [promotion.definition]).get(
        (promotion.target_stage_id, promotion.definition_id))
    held_build = None
    if held is not None and held.digest != promotion.digest:
        held_build = held.build or Build.objects.filter(definition=promotion.definition, digest=held.digest).first()
    current = {(f.advisory.identifier, f.package): f for f in vulns.findings_for(held_build)} if held_build else {}
    return render(request, "supplychain/_promotion_trust.html", {
        "promotion": promotion, "stage": promotion.target_stage, **summary,
        "new_findings": [f for k, f in proposed.items() if k not in current],
        "fixed_findings": [f for k, f in current.items() if k not in proposed],
        "kept": sum(1 for k in proposed if k in current), "compared": held_build is not None,
        "findings": list(proposed.values()),
        **_vulnerability_gate(request, promotion),
    })


def _vulnerability_gate(request, promotion) -> dict:
    """What the card says of the stage's vulnerability policy: its verdict, the overrides given, and the override form
    for someone who may approve a request it holds back."""
    verdict = gate.vulnerability_check(promotion=promotion, start=False)
    overrides = list(promotion.vulnerability_overrides.all())
    may_override = (verdict is not None and verdict.state == verdict.FAILED and promotion.status in ("pending", "approved")
                    and not approval_refusal(promotion, request.user))
    return {"cve_verdict": verdict, "overrides": overrides, "override_form": OverrideForm() if may_override else None}


# --- Advisories ------------------------------------------------------------------------------------------------------


@login_required
def advisories(request):
    query = request.GET.get("q", "").replace("\x00", "").strip()[:100]
    rows = Advisory.objects.select_related("feed").order_by("identifier")
    if query:
        rows = rows.filter(Q(identifier__icontains=query) | Q(aliases__icontains=query) | Q(summary__icontains=query)
                           | Q(packages__name=query)).distinct()
    return render(request, "supplychain/advisories.html", {
        "feeds": AdvisoryFeed.objects.select_related("imported_by"), "advisories": rows[:200], "q": query,
        "form": FeedImportForm() if request.user.is_superuser else None,
        "source_form": FeedSourceForm() if request.user.is_superuser else None,
    })


@login_required
@require_POST
def feed_source(request):
    if not request.user.is_superuser:
        raise PermissionDenied("Only portal administrators set where advisory feeds come from.")
    form = FeedSourceForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Name the feed, give its URL (or none) and how often to read it (1 to 720 hours).")
        return redirect("supplychain:advisories")
    data = form.cleaned_data
    try:
        feed = feeds.feed_source_set(name=data["name"], url=data["url"], refresh_hours=data["refresh_hours"],
                                     user=request.user, request=request)
    except ValidationError as exc:
        messages.error(request, f"Nothing was changed: {error_text(exc)}")
    else:
        messages.success(request, f"{feed} is read from {feed.url} every {feed.refresh_hours} h; beat reads it next."
                         if feed.url else f"{feed} is no longer read from a URL.")
    return redirect("supplychain:advisories")


@login_required
@require_POST
def feed_refresh(request, pk):
    """Read a feed's URL now (portal administrators), as beat would."""
    if not request.user.is_superuser:
        raise PermissionDenied("Only portal administrators read advisory feeds.")
    feed = AdvisoryFeed.objects.filter(pk=pk).exclude(url="").first()
    if feed is None:
        raise Http404("No feed with a URL by that id.")
    outcome = feeds.feed_refresh(feed=feed, user=request.user, request=request)
    (messages.error if outcome.startswith("Nothing") else messages.success)(request, outcome)
    return redirect("supplychain:advisories")


@login_required
@require_POST
def feed_import(request):
    if not request.user.is_superuser:
        raise PermissionDenied("Only portal administrators import advisory feeds.")
    form = FeedImportForm(request.POST, request.FILES)
    if form.is_valid():
        upload = form.cleaned_data["file"]
        try:
            data = upload.read(services.feed_read_limit() + 1)
            feed = services.feed_import(name=form.cleaned_data["name"], data=data, source=upload.name,
                                        user=request.user, request=request)
        except ValidationError as exc:
            messages.error(request, f"Nothing was imported: {error_text(exc)}")
        else:
            messages.success(request, f"Imported {feed.advisory_count} advisories into {feed}.")
    else:
        messages.error(request, "Name the feed and choose its file.")
    return redirect("supplychain:advisories")


@login_required
def advisory_detail(request, identifier):
    """One advisory (by its id or a CVE it names): every build the user may see that carries an affected version, with
    the stages that hold it now and (the hosts app's fragment "build.hosts") how many hosts run it."""
    if "\x00" in identifier:
        raise Http404("No advisory of that name in the imported feeds.")
    candidates = Advisory.objects.filter(Q(identifier=identifier) | Q(aliases__icontains=identifier)) \
        .select_related("feed")
    matches = [advisory for advisory in candidates if identifier in (advisory.identifier, *advisory.aliases)]
    if not matches:
        raise Http404("No advisory of that name in the imported feeds.")
    affected = AffectedPackage.objects.filter(advisory__in=matches).select_related("advisory")
    rows = []
    for package in affected:
        builds = (Build.objects.visible_to(request.user).succeeded().with_related()
                  .filter(package_format=package.package_format, packages__has_key=package.name)
                  .order_by("-pk")[:AFFECTED_BUILDS_SHOWN])
        for build in builds:
            installed = build.packages.get(package.name, "")
            hit, fixed = vulns.affected_by(package.package_format, installed, package.ranges, package.versions)
            if hit:
                rows.append({"build": build, "package": package.name, "installed": installed, "fixed": fixed})
    stages_holding = _stages_holding([row["build"] for row in rows])
    for row in rows:
        row["stages"] = stages_holding.get(row["build"].pk, [])
        row["hosts_url"] = registry.fragment_url("build.hosts", row["build"].pk)  # hosts' to say, if installed
    rows.sort(key=lambda row: (not row["stages"], row["build"].definition.name, -row["build"].number))
    return render(request, "supplychain/advisory.html", {
        "identifier": identifier, "advisories": matches, "rows": rows, "in_stages": sum(1 for r in rows if r["stages"]),
    })


def _stages_holding(builds) -> dict[int, list]:
    """{build id: [stages holding its digest now]}: one pass over the stages of the builds' teams."""
    by_team = {}
    for build in builds:
        by_team.setdefault(build.definition.team, set()).add(build.definition)
    holding = {}
    for team, definitions in by_team.items():
        stages = list(team.stages.all())
        entries = current_entries(stages, definitions)
        for build in builds:
            if build.definition.team != team:
                continue
            holding[build.pk] = [stage for stage in stages
                                 if getattr(entries.get((stage.pk, build.definition_id)), "digest", "") == build.digest]
    return holding
