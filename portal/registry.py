"""What the feature apps show and do through the core, which imports none of them.

Each feature app fills these in its `AppConfig.ready()` (the way NetBox registers dashboard widgets); the core reads
them without knowing who registered what:

- `dashboard_tiles(...)`: counts and tiles on the dashboard, and where a team's runs are listed;
- `team_setup(...)`: what a new team gets (`portal.services.team_create` calls each, in its transaction), and
  `team_link(...)`: the feature's pages for a team, linked from the team's page;
- `subscribe(...)` / `announce(...)`: in-process hooks between features that may not import each other ("a promotion
  was applied" is announced by releases, and hosts, which may read releases, subscribes);
- `run_retry(...)`: how a run of a feature's kind is started again as a new one (a build, a conversion), for the
  core's one retry view (`portal.views.run_retry`); `run_cancel(...)`: the role a user needs to cancel a run of a
  feature's kind, when it is not a developer's (cancelling itself is the core's, `portal.views.run_cancel`);
- `fragment(...)` / `fragment_url(...)`: a page of one app loading a fragment another app serves, by a name both know,
  without importing it (the builds pages load "who runs this image" from hosts this way);
- `failure_rules(...)`: a feature's own rules for the failure explainer (`portal.failures`, docs/failures.md), tried
  before the core's;
- `notification_event(...)`: the kinds of event a feature emits through `portal.events` (stored for the API's event
  list, sent to outbound webhooks, emailed), with the label a team admin picks them by, their version and the JSON
  Schema of their data;
- `gauge(...)` and `queues(...)`: what `/metrics` reads for a feature at scrape time (hosts per state, promotions
  waiting, builder load), and the Celery queues whose depth it reports (`portal.metrics`);
- `stored_files(...)`: the files a feature keeps in a storage (disk images' artifacts), whose names `manage.py backup`
  records and `manage.py restore` checks (`portal.backups`);
- `lean_path(...)`: a path prefix of machine endpoints (their own authentication, no session or CSRF token) that
  skip the middleware stack after the probes: hosts' agents report there thousands of times a minute;
- `http_front(...)`: an ASGI app that answers some HTTP requests in the event loop, before Django's request cycle, and
  hands the rest to Django (`portal/asgi.py` wraps Django in each one): hosts' unchanged status reports, thousands a
  second, are answered there from Redis;
- `landing(...)`: where a persona lands after logging in, when a feature's page is its job (the help desk on the host
  search, an approver on the inbox);
- `retention_step(...)`: what keeps a feature's data from growing forever, run by the core's retention pass
  (`portal.retention`) with its own steps (logs, webhook deliveries, login records) and recorded with them;
- `digest_keeper(...)`: why an image digest must stay in the registry (a stage holds it, a host boots it or keeps it
  as rollback, a disk image was made from it), asked by builds' image retention (`builds.retention`), which may not
  import the apps that know;
- `promotion_check(...)`: a check a promotion must pass before it is approved and applied, which releases' gate asks
  without importing the feature that answers (disk images' boot tests);
- `api_router(...)`: a feature's ninja Router for the REST API, mounted under /api/v1/<prefix> by `portal.api.mount`
  (docs/api.md);
- `provide(...)` / `providers(...)`: functions one feature calls and another supplies, by a name both know, when the
  caller needs an answer (unlike `announce`): releases asks "promotion.copy_trust" what its copy must verify, and the
  supply chain, which may read releases, answers.

Registration happens once per process, at start-up; nothing here is written afterwards.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from django.urls import reverse

from portal import failures

log = logging.getLogger(__name__)


# --- Dashboard -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tile:
    """One tile: `key` names a count of its group's `count` function; the tile links to `url_name`."""

    key: str
    label: str
    icon: str
    url_name: str


@dataclass(frozen=True)
class TileGroup:
    """Tiles whose counts one function returns: `count(user, teams) -> {key: int}`, over `teams` (already limited to
    what the user may see). `across_teams`: help-desk users, who read these rows in every team, see the group counted
    over all teams; groups without it are not shown to a help-desk user who belongs to no team."""

    count: Callable
    tiles: tuple[Tile, ...]
    order: int
    across_teams: bool


@dataclass(frozen=True)
class RunList:
    """A page listing a team's runs, for the dashboard's "runs" links (the first one the user may read wins)."""

    label: str
    url_name: str
    order: int
    across_teams: bool


@dataclass(frozen=True)
class Panel:
    """A template the dashboard includes above its tiles (a callout), with the dashboard's context."""

    template: str
    order: int


_tile_groups: list[TileGroup] = []
_run_lists: list[RunList] = []
_panels: list[Panel] = []


def dashboard_tiles(*, count: Callable, tiles: Iterable[Tile], order: int, across_teams: bool = False) -> None:
    _tile_groups.append(TileGroup(count=count, tiles=tuple(tiles), order=order, across_teams=across_teams))
    _tile_groups.sort(key=lambda group: group.order)


def dashboard_run_list(*, label: str, url_name: str, order: int, across_teams: bool = False) -> None:
    _run_lists.append(RunList(label=label, url_name=url_name, order=order, across_teams=across_teams))
    _run_lists.sort(key=lambda entry: entry.order)


def dashboard_panel(*, template: str, order: int) -> None:
    _panels.append(Panel(template=template, order=order))
    _panels.sort(key=lambda panel: panel.order)


def tile_groups() -> list[TileGroup]:
    return list(_tile_groups)


def run_lists() -> list[RunList]:
    return list(_run_lists)


def panels() -> list[Panel]:
    return list(_panels)


# --- What a new team gets --------------------------------------------------------------------------------------------

_team_setup: list[Callable] = []


def team_setup(function: Callable) -> Callable:
    """Register `function(*, team)`, called for each new team inside the transaction that creates it."""
    _team_setup.append(function)
    return function


def team_setup_functions() -> list[Callable]:
    return list(_team_setup)


@dataclass(frozen=True)
class TeamLink:
    """A feature's page for one team (`url_name` takes the team's slug), shown to members whose role allows
    `action`."""

    label: str
    icon: str
    url_name: str
    action: str
    order: int


_team_links: list[TeamLink] = []


def team_link(*, label: str, icon: str, url_name: str, action: str, order: int) -> None:
    _team_links.append(TeamLink(label=label, icon=icon, url_name=url_name, action=action, order=order))
    _team_links.sort(key=lambda link: link.order)


def team_links() -> list[TeamLink]:
    return list(_team_links)


# --- Where each persona lands ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Landing:
    """Where a user lands after logging in (with no page asked for) when `applies(user)` says the page is their job:
    the help desk on the host search, an approver on the inbox. The first that applies, by `order`, wins; else the
    dashboard."""

    url_name: str
    applies: Callable
    order: int
    query: str = ""


_landings: list[Landing] = []


def landing(*, url_name: str, applies: Callable, order: int, query: str = "") -> None:
    _landings.append(Landing(url_name=url_name, applies=applies, order=order, query=query))
    _landings.sort(key=lambda entry: entry.order)


def landing_url(user) -> str | None:
    """The page `user` lands on after logging in, or None for the dashboard."""
    for entry in _landings:
        if entry.applies(user):
            return reverse(entry.url_name) + (f"?{entry.query}" if entry.query else "")
    return None


# --- Hooks between features ------------------------------------------------------------------------------------------

_subscribers: dict[str, list[Callable]] = defaultdict(list)


def subscribe(hook: str, function: Callable) -> None:
    """Call `function(**details)` whenever `hook` is announced."""
    _subscribers[hook].append(function)


def announce(hook: str, **details) -> int:
    """Call every subscriber of `hook` with `details`. The announcer's work is done: a subscriber that fails is logged
    and does not stop the others or undo anything. Returns how many subscribers ran without error."""
    done = 0
    for function in list(_subscribers.get(hook, ())):
        try:
            function(**details)
        except Exception:  # noqa: BLE001 - a subscriber's failure is its own; the announcer's change stands
            log.exception("%s: subscriber %s.%s failed", hook, function.__module__, function.__qualname__)
        else:
            done += 1
    return done


# --- Starting a run again ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRetry:
    """How a run of `kind` is started again: `retry(*, run, user, request)` makes a new one like it and returns its
    subject (the new build, the new conversion), or raises ValidationError saying why not. `action` is the role action
    the user needs in the run's team."""

    kind: str
    retry: Callable
    action: str


_run_retries: dict[str, RunRetry] = {}


def run_retry(*, kind: str, retry: Callable, action: str) -> None:
    _run_retries[kind] = RunRetry(kind=kind, retry=retry, action=action)


def run_retry_for(kind: str) -> RunRetry | None:
    return _run_retries.get(kind)


_run_cancels: dict[str, str] = {}


def run_cancel(*, kind: str, action: str) -> None:
    """Cancelling a run of `kind` needs `action` in the run's team (operators stop host actions; team admins stop
    the key rotations only they may start). Kinds no feature names need a developer's."""
    _run_cancels[kind] = action


def run_cancel_action(kind: str, default: str) -> str:
    return _run_cancels.get(kind, default)


# --- Fragments served by one app, loaded by another ------------------------------------------------------------------

_fragments: dict[str, str] = {}


def fragment(name: str, *, url_name: str) -> None:
    """The fragment called `name` is served at the URL pattern `url_name` (reversed with the loader's arguments)."""
    _fragments[name] = url_name


def fragment_url(name: str, *args) -> str | None:
    """Where the fragment called `name` is served for `args`, or None when no app serves it (the page leaves it
    out)."""
    url_name = _fragments.get(name)
    return reverse(url_name, args=args) if url_name else None


# --- Failure explanations (portal/failures.py) -------------------------------------------------------------------------


def failure_rules(entries: list[dict]) -> None:
    """A feature's failure rules, with the keys of portal/failure_rules.toml; tried before the core's."""
    failures.register_rules(entries)


# --- Kinds of notification event -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventType:
    """A kind of event a feature emits (`portal.events.emit`): stored for the API's event list and sent to the
    team's webhooks subscribed to it. `schema` is the path of the JSON Schema of its `data` at `version`; the core's
    envelope (docs/events.md) wraps it. A change that is not backwards compatible gets a new version, never an edit."""

    kind: str
    label: str
    version: int
    schema: str


_notification_events: dict[str, EventType] = {}


def notification_event(kind: str, label: str, *, version: int = 1, schema: str = "") -> None:
    """`kind` (e.g. "build.failed": the envelope's `type` and X-Portal-Event) is emitted through portal.events;
    webhooks subscribe to it by `label`."""
    _notification_events[kind] = EventType(kind=kind, label=label, version=version, schema=str(schema))


def notification_events() -> list[tuple[str, str]]:
    """(kind, label) of every registered kind of event, in the order the apps registered them."""
    return [(kind, entry.label) for kind, entry in _notification_events.items()]


def event_type(kind: str) -> EventType | None:
    return _notification_events.get(kind)


def event_types() -> list[EventType]:
    return list(_notification_events.values())


# --- Metrics (portal/metrics.py) -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gauge:
    """A gauge `/metrics` reads at scrape time: `read()` returns {(label values, in the order of `labels`): value}.
    Several features may register the same name (builds and disk images each count the runs on a builder); their
    samples are merged, so they must agree on `documentation` and `labels`."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    read: Callable[[], dict[tuple[str, ...], float]]


_gauges: list[Gauge] = []
_queue_readers: list[Callable[[], Iterable[str]]] = []


def gauge(*, name: str, documentation: str, labels: Iterable[str] = (), read: Callable) -> None:
    _gauges.append(Gauge(name=name, documentation=documentation, labels=tuple(labels), read=read))


def gauges() -> list[Gauge]:
    return list(_gauges)


def queues(function: Callable[[], Iterable[str]]) -> Callable[[], Iterable[str]]:
    """Register `function()`, the names of Celery queues a feature sends tasks to (builds: its builders' queues), so
    that `/metrics` reports their depth even while no worker consumes them."""
    _queue_readers.append(function)
    return function


def queue_readers() -> list[Callable[[], Iterable[str]]]:
    return list(_queue_readers)


# --- Files kept outside the database (portal/backups.py) -------------------------------------------------------------


@dataclass(frozen=True)
class StoredFile:
    """One file a database row points at, kept in the storage `storage` (a STORAGES alias) under `name`."""

    kind: str
    storage: str
    name: str
    size: int | None = None


_stored_files: list[Callable[[], Iterable[StoredFile]]] = []


def stored_files(function: Callable[[], Iterable[StoredFile]]) -> Callable[[], Iterable[StoredFile]]:
    """Register `function()`, the files the feature's rows point at. A backup holds the database only: it records
    these names (read in the same snapshot as the dump) and a restore checks that each still exists."""
    _stored_files.append(function)
    return function


def stored_file_readers() -> list[Callable[[], Iterable[StoredFile]]]:
    return list(_stored_files)


# --- Retention steps (portal/retention.py) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RetentionStep:
    """Something that keeps a kind of data from growing forever: `function(*, now, previous)` removes what is due
    and returns {"count": how many it removed, ...anything else worth recording}. `previous` is when the last pass
    started (None before the first), for steps that need only look at what became due since. `name` keys it in
    `RetentionRun.removed`."""

    name: str
    label: str
    function: Callable
    order: int


_retention_steps: list[RetentionStep] = []


def retention_step(*, name: str, label: str, function: Callable, order: int) -> None:
    _retention_steps.append(RetentionStep(name=name, label=label, function=function, order=order))
    _retention_steps.sort(key=lambda step: step.order)


def retention_steps() -> list[RetentionStep]:
    return list(_retention_steps)


# --- Digests in use (builds/retention.py) ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestKeeper:
    """Something that needs image digests kept in the registry: `function(*, definition, digests)` returns
    {digest: [reason, ...]} for those of `digests` (digests of `definition`'s builds) it needs, each reason a sentence
    a team member may read ("stage prod holds it"). A keeper that fails stops the deletion: nothing is deleted on a
    guess."""

    name: str
    function: Callable
    order: int


_digest_keepers: list[DigestKeeper] = []


def digest_keeper(*, name: str, function: Callable, order: int) -> None:
    _digest_keepers.append(DigestKeeper(name=name, function=function, order=order))
    _digest_keepers.sort(key=lambda keeper: keeper.order)


def digest_keepers() -> list[DigestKeeper]:
    return list(_digest_keepers)


# --- Lean paths ------------------------------------------------------------------------------------------------------

_lean_prefixes: list[str] = []


def lean_path(prefix: str) -> None:
    """Requests under `prefix` are answered by their view right after the probes (`portal.middleware.lean_paths`),
    without sessions, users, CSRF, messages or CSP: only for endpoints that authenticate each request themselves and
    answer machines, never pages."""
    if not prefix.startswith("/") or not prefix.endswith("/"):
        raise ValueError(f"{prefix!r}: a lean path is a prefix that starts and ends with /")
    _lean_prefixes.append(prefix)


def lean_paths() -> tuple[str, ...]:
    return tuple(_lean_prefixes)


# --- ASGI fronts ----------------------------------------------------------------------------------------------------

_http_fronts: list[Callable] = []


def http_front(wrap: Callable) -> Callable:
    """Register `wrap(app) -> app`: an ASGI app that answers the HTTP requests it knows in the event loop and passes
    every other request (and any it cannot answer there) to `app`, unchanged. It runs before every middleware, so it
    authenticates, limits and answers on its own: only for machine endpoints, never pages."""
    _http_fronts.append(wrap)
    return wrap


def http_fronts() -> list[Callable]:
    return list(_http_fronts)


def behind_http_fronts(app: Callable) -> Callable:
    """`app` (Django's ASGI application) with every registered front before it, the last registered outermost: what
    the web processes (`portal.asgi`) and the machine endpoints' server (`portal.machine_server`) serve over HTTP."""
    for wrap in http_fronts():
        app = wrap(app)
    return app


# --- Checks of the promotion gate (builds/releases/gate.py) ----------------------------------------------------------


@dataclass(frozen=True)
class GateVerdict:
    """What one feature's check says of a promotion. `running`: its approval and application wait; `failed` and
    `missing`: refused, with `message` (and `lines`, e.g. a console's last lines) on the approval card; `url` links
    the evidence. `refuses_request`: a failed verdict that holds already when the promotion is asked for (a digest
    without the signature the stage requires): the request itself is refused with `message`, and nothing is stored."""

    PASSED, RUNNING, FAILED, MISSING = "passed", "running", "failed", "missing"

    name: str
    state: str
    message: str
    url: str = ""
    lines: tuple[str, ...] = ()
    refuses_request: bool = False

    @property
    def passed(self) -> bool:
        return self.state == self.PASSED

    @property
    def running(self) -> bool:
        return self.state == self.RUNNING


_promotion_checks: list[Callable] = []


def promotion_check(function: Callable) -> Callable:
    """Register `function(*, promotion, start) -> GateVerdict | None` (None: the check does not apply to this
    promotion's stage). With `start` the check may start what it needs (inside the caller's transaction); without it,
    it only reads (the approval card)."""
    _promotion_checks.append(function)
    return function


def promotion_checks() -> list[Callable]:
    return list(_promotion_checks)


# --- Answers one feature asks of another -----------------------------------------------------------------------------

_providers: dict[str, list[Callable]] = defaultdict(list)


def provide(name: str, function: Callable) -> None:
    """`function` answers the question called `name`; its signature and answer are the asker's contract."""
    _providers[name].append(function)


def providers(name: str) -> list[Callable]:
    """Every function that answers `name`, in the order they registered (none: nobody answers, the asker goes on
    without). Unlike `announce`, a provider's exception reaches the asker, which must not go on without the answer."""
    return list(_providers.get(name, ()))


# --- REST API routers (portal/api.py) --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiRouter:
    """A feature's django-ninja Router, mounted at /api/v1/`prefix` (e.g. "disk-images/"). `router` is the Router or
    its dotted path ("builds.api.builds"), imported only when the URLconf loads, so a worker that never serves the API
    never imports it (nor django-ninja and pydantic)."""

    prefix: str
    router: object
    order: int


_api_routers: list[ApiRouter] = []


def api_router(prefix: str, router, *, order: int) -> None:
    if prefix.startswith("/") or not prefix.endswith("/"):
        raise ValueError(f"{prefix!r}: an API router's prefix is relative and ends with /, e.g. 'disk-images/'")
    _api_routers.append(ApiRouter(prefix=prefix, router=router, order=order))
    _api_routers.sort(key=lambda entry: entry.order)


def api_routers() -> list[ApiRouter]:
    return list(_api_routers)
