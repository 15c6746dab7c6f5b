"""The release map: for each image definition, its stages (dev -> test -> prod) as lanes, the digest each holds (build,
version, since when, who asked for it), the promotions on their way into it (waiting for approval, approved, being
applied) and, under each, a bar of the hosts that follow the stage's tag by state.

Hosts draws it, since it may read both what the stages hold (`builds.releases.gate`) and its own hosts; the dashboard
shows it as a panel and the definition page loads it as the "definition.release_map" fragment (`hosts.apps`). The bar
is SVG made here, on the server: its geometry is in attributes and its colours in classes (static/hosts/pictures.css),
so the Content-Security-Policy's ban on inline styles holds. Reads only: a fixed number of queries whatever the number
of hosts and promotions (one per stage for what the stages hold, one for every host count, one for the promotions on
their way).
"""

from dataclasses import dataclass, field

from django.db.models import Case, Count, F, When

from builds.models import Build, ImageDefinition
from builds.releases.gate import current_entries
from builds.releases.models import Promotion, PromotionStatus, Stage, StageHistory

from .models import Host, HostState

VERSION_LABEL = "org.opencontainers.image.version"

# The bar's parts, in the order they are drawn; the class names are the CSS's (rm-<key>).
CATEGORIES = (
    ("up_to_date", "up to date"),
    ("staged", "update staged"),
    ("drifting", "drifting"),
    ("rolled_back", "rolled back"),
    ("unreachable", "unreachable"),
    ("unknown", "not read yet"),
)
# Promotions on their way into a stage, shown in its lane (the rest are history, on the promotions page).
ON_THE_WAY = (PromotionStatus.PENDING, PromotionStatus.APPROVED, PromotionStatus.APPLYING)
# A lane lists this many of them, newest first, and counts the rest.
ON_THE_WAY_SHOWN = 2
_UNREACHABLE = {HostState.UNREACHABLE, HostState.AUTH_FAILED, HostState.HOST_KEY_CHANGED, HostState.UNREADABLE}


def category(state: str, drifting: bool) -> str:
    """Which part of the bar a host in `state` falls in: what needs a look first wins."""
    if state in _UNREACHABLE:
        return "unreachable"
    if state == HostState.ROLLED_BACK:
        return "rolled_back"
    if state == HostState.UPDATE_STAGED:
        return "staged"
    if drifting or state == HostState.DRIFT:
        return "drifting"
    if state in (HostState.UP_TO_DATE, HostState.RUNNING):
        return "up_to_date"
    return "unknown"


@dataclass
class Segment:
    key: str
    label: str
    n: int
    x: str  # in the bar's 0-100 viewBox, as text: the template writes it into an attribute untouched by localisation
    width: str


def segments(counts: dict[str, int]) -> list[Segment]:
    """The bar's parts for {category: hosts}, left to right, each as wide as its share."""
    total = sum(counts.values())
    parts, x = [], 0.0
    for key, label in CATEGORIES:
        n = counts.get(key, 0)
        if not n:
            continue
        width = 100.0 * n / total
        parts.append(Segment(key=key, label=label, n=n, x=f"{x:.3f}", width=f"{width:.3f}"))
        x += width
    return parts


@dataclass
class Lane:
    stage: Stage
    entry: StageHistory | None
    build: Build | None
    version: str
    counts: dict = field(default_factory=dict)
    on_the_way: list = field(default_factory=list)  # promotions, newest first

    @property
    def on_the_way_shown(self):
        """(promotion, whether it would move the stage back) for the newest few."""
        return [(promotion, self.moves_back(promotion)) for promotion in self.on_the_way[:ON_THE_WAY_SHOWN]]

    @property
    def on_the_way_more(self):
        return max(0, len(self.on_the_way) - ON_THE_WAY_SHOWN)

    def moves_back(self, promotion):
        """Whether `promotion` would put an older build of the definition than the one the stage holds."""
        return (self.build is not None and promotion.build is not None
                and promotion.build.number < self.build.number)

    @property
    def segments(self):
        return segments(self.counts)

    @property
    def hosts(self):
        return sum(self.counts.values())

    @property
    def summary(self):
        """The bar in words (its accessible name)."""
        if not self.hosts:
            return f"No hosts follow {self.stage.name}."
        parts = ", ".join(f"{s.n} {s.label}" for s in self.segments)
        return f"{self.hosts} host{'s' if self.hosts != 1 else ''} follow {self.stage.name}: {parts}."


@dataclass
class DefinitionMap:
    definition: ImageDefinition
    lanes: list[Lane]


def release_map(user, definitions) -> list[DefinitionMap]:
    """The map of `definitions` (already limited to what `user` may see), with the hosts `user` may see."""
    definitions = list(definitions)
    if not definitions:
        return []
    stages_of = {}
    for stage in Stage.objects.filter(team_id__in={d.team_id for d in definitions}).select_related("team"):
        stages_of.setdefault(stage.team_id, []).append(stage)
    entries = {}
    for team_id, stages in stages_of.items():
        entries.update(current_entries(stages, [d for d in definitions if d.team_id == team_id]))
    _fill_missing_builds(entries)
    references = {stage.reference(d): (stage.pk, d.pk) for d in definitions for stage in stages_of.get(d.team_id, [])}
    counts = {}
    rows = (Host.objects.visible_to(user).following(references)
            .annotate(followed=Case(When(tracked_image="", then=F("spec_image")), default=F("tracked_image")))
            .values("followed", "state", "drifting").annotate(n=Count("id")).order_by())
    for row in rows:
        key = references.get(row["followed"])
        if key is not None:
            part = counts.setdefault(key, {})
            name = category(row["state"], row["drifting"])
            part[name] = part.get(name, 0) + row["n"]
    on_the_way = {}
    for promotion in (Promotion.objects.filter(definition__in=definitions, status__in=ON_THE_WAY)
                      .select_related("build").order_by("-created_at", "-pk")):
        on_the_way.setdefault((promotion.target_stage_id, promotion.definition_id), []).append(promotion)
    result = []
    for definition in definitions:
        lanes = []
        for stage in sorted(stages_of.get(definition.team_id, []), key=lambda s: s.position):
            entry = entries.get((stage.pk, definition.pk))
            build = entry.build if entry is not None else None
            version = (build.labels or {}).get(VERSION_LABEL, "") if build is not None else ""
            lanes.append(Lane(stage=stage, entry=entry, build=build, version=version,
                              counts=counts.get((stage.pk, definition.pk), {}),
                              on_the_way=on_the_way.get((stage.pk, definition.pk), [])))
        result.append(DefinitionMap(definition=definition, lanes=lanes))
    return result


def _fill_missing_builds(entries):
    """History entries whose build row was cleared (SET_NULL) find it again by digest, if one is left."""
    missing = [e for e in entries.values() if e.build is None]
    if not missing:
        return
    found = {(b.definition_id, b.digest): b for b in Build.objects.filter(
        definition_id__in={e.definition_id for e in missing}, digest__in={e.digest for e in missing}).order_by("number")}
    for entry in missing:
        entry.build = found.get((entry.definition_id, entry.digest))
