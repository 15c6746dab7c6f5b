"""What the supply chain says of a promotion, for releases' gate (`portal.registry.promotion_check`; releases never
import this app).

- `signature_check`: a stage that requires a key takes only a digest the portal signed with a key it accepts now. A
  digest that is unsigned, or signed only with another, retired or expired key, is refused as it is asked for, with
  the reason (`refuses_request`). This is the portal's early word, from its own records; the copy to the stage runs
  under a policy.json all the same (`services.copy_trust`), so containers/image still verifies the real signature
  at apply time and refuses one the store lost or never had.
- `vulnerability_check`: a stage with a vulnerability policy holds back a digest that carries a known vulnerability
  of the policy's severity or worse, matched as the check runs (so an advisory feed that changes re-evaluates every
  waiting promotion, with no rebuild). An approver may override it for the promotion, with a reason
  (`services.vulnerability_override`): bound to the digest and to the advisories known then.
"""

from __future__ import annotations

from django.urls import reverse
from django.utils import timezone

from portal.registry import GateVerdict

from . import vulns
from .models import Signature, SigningKey, StageSigningPolicy, StageVulnerabilityPolicy, VulnerabilityOverride
from .rotation import verifying_keys

SIGNATURE = "Signature"
VULNERABILITIES = "Vulnerabilities"
LISTED = 6


def accepted_keys(stage, now=None) -> list[SigningKey]:
    """The keys whose signatures `stage` takes now: the key it requires and, during a GPG rotation to it, the old key
    until its date (`rotation.verifying_keys`, what the copy's policy.json names), while they are not retired."""
    now = now or timezone.now()
    policy = StageSigningPolicy.objects.filter(stage=stage).select_related("key").first()
    if policy is None or policy.key is None:
        return []
    return [key for key in verifying_keys(policy.key, now=now) if key.retired_at is None or key.retired_at > now]


def _why_not(key: SigningKey, stage, now) -> str:
    if key.retired_at is not None and key.retired_at <= now:
        return f"{key} ({key.short_fingerprint}), retired on {key.retired_at:%Y-%m-%d %H:%M} UTC"
    return f"{key} ({key.short_fingerprint}), which {stage.name} does not accept"


def signature_check(*, promotion, start: bool) -> GateVerdict | None:
    """Whether `promotion`'s digest carries a signature its stage accepts: None for a stage that requires none (and
    for rollbacks, which go back to a digest the stage ran before; their copy is verified all the same)."""
    stage = promotion.target_stage
    policy = StageSigningPolicy.objects.filter(stage=stage).select_related("key").first()
    if policy is None or policy.key is None or promotion.is_rollback:
        return None
    now = timezone.now()
    accepted = {key.pk for key in accepted_keys(stage, now)}
    signatures = list(Signature.objects.valid().filter(digest=promotion.digest, key__team_id=stage.team_id)
                      .select_related("key").order_by("signed_at"))
    url = reverse("supplychain:build", args=[promotion.build_id]) + "#signatures" if promotion.build_id else ""
    good = next((s for s in signatures if s.key_id in accepted), None)
    if good is not None:
        return GateVerdict(name=SIGNATURE, state=GateVerdict.PASSED, url=url,
                           message=f"{promotion.short_digest} is signed with {good.key} ({good.key.short_fingerprint}) "
                                   f"since {good.signed_at:%Y-%m-%d %H:%M} UTC; skopeo verifies it again as it copies.")
    required = policy.key
    wanted = f"{stage.name} requires a signature with key {required} ({required.short_fingerprint})"
    if signatures:
        others = "; ".join(_why_not(s.key, stage, now) for s in signatures)
        message = f"{wanted}, and {promotion.short_digest} is signed only with {others}."
    else:
        message = f"{wanted}, and {promotion.short_digest} is unsigned."
    return GateVerdict(name=SIGNATURE, state=GateVerdict.FAILED, url=url, refuses_request=True,
                       message=f"{message} Sign it with {required} on its supply chain page, then ask again.")


def refused_findings(promotion, policy=None) -> list[vulns.Finding]:
    """The known vulnerabilities of `promotion`'s digest that its stage's policy refuses (none without a policy)."""
    policy = policy or StageVulnerabilityPolicy.objects.filter(stage_id=promotion.target_stage_id).first()
    if policy is None or promotion.build is None:
        return []
    return [f for f in vulns.findings_for(promotion.build) if policy.refuses(f.advisory.severity)]


def covering_override(promotion, findings) -> VulnerabilityOverride | None:
    """The newest override of `promotion`'s digest that names every advisory in `findings`, if any."""
    wanted = {f.advisory.identifier for f in findings}
    for override in VulnerabilityOverride.objects.filter(promotion=promotion, digest=promotion.digest):
        if wanted <= set(override.advisories):
            return override
    return None


def vulnerability_check(*, promotion, start: bool) -> GateVerdict | None:
    """Whether `promotion`'s digest carries vulnerabilities its stage refuses: None for a stage without a policy and
    for rollbacks (back to a digest the stage ran before)."""
    policy = StageVulnerabilityPolicy.objects.filter(stage_id=promotion.target_stage_id).first()
    if policy is None or promotion.is_rollback:
        return None
    stage = promotion.target_stage
    url = reverse("supplychain:build", args=[promotion.build_id]) + "#vulnerabilities" if promotion.build_id else ""
    threshold = policy.get_refuse_from_display().lower()
    findings = refused_findings(promotion, policy)
    if not findings:
        return GateVerdict(name=VULNERABILITIES, state=GateVerdict.PASSED, url=url,
                           message=f"{promotion.short_digest} carries no known vulnerability that {stage.name} refuses "
                                   f"({threshold} or worse).")
    names = sorted({f.advisory.identifier for f in findings})
    listed = ", ".join(names[:LISTED]) + (f" and {len(names) - LISTED} more" if len(names) > LISTED else "")
    override = covering_override(promotion, findings)
    if override is not None:
        return GateVerdict(name=VULNERABILITIES, state=GateVerdict.PASSED, url=url,
                           message=f"{override.approver_name} overrode {listed} for {promotion.short_digest} on "
                                   f"{override.created_at:%Y-%m-%d %H:%M} UTC: {override.reason}")
    return GateVerdict(name=VULNERABILITIES, state=GateVerdict.FAILED, url=url,
                       message=f"{stage.name} refuses images with {threshold} or worse vulnerabilities, and "
                               f"{promotion.short_digest} carries {listed}. An approver may override this on the card, "
                               "with a reason.")
