"""Build trends for a definition's page: how long its last builds took, how big their images were and how many
packages they held, as small bar charts with the failures marked.

Drawn on the server as SVG: geometry in attributes, colours in classes (static/builds/builds.css), so nothing needs an
inline style, which the Content-Security-Policy forbids; each bar links to its build and says its value on hover.
"""

from dataclasses import dataclass, field

from django.template.defaultfilters import filesizeformat

from portal.models import RunStatus

from .models import Build

TREND_BUILDS = 30
WIDTH, HEIGHT = 300, 60  # the charts' viewBox


@dataclass
class Bar:
    number: int
    url: str
    status: str  # succeeded, failed, cancelled, running, queued
    value: float | None
    text: str  # the value in words, for the bar's title
    x: str = ""
    y: str = ""
    width: str = ""
    height: str = ""


@dataclass
class Chart:
    key: str
    title: str
    bars: list[Bar] = field(default_factory=list)
    top: str = ""  # the tallest value, in words

    @property
    def failures(self):
        return sum(bar.status == RunStatus.FAILED for bar in self.bars)


def duration_text(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _lay_out(chart: Chart, describe) -> Chart:
    """Place the bars: one slot each, as tall as its share of the tallest value. A build with no value (a failed build
    has no image) gets a short mark on the baseline, so its failure still shows in every chart."""
    slots = max(len(chart.bars), 1)
    slot = WIDTH / slots
    tallest = max((bar.value for bar in chart.bars if bar.value), default=0)
    chart.top = describe(tallest) if tallest else ""
    for index, bar in enumerate(chart.bars):
        height = (HEIGHT - 2) * bar.value / tallest if bar.value and tallest else 3
        height = max(height, 1.5)
        bar.x, bar.width = f"{index * slot + slot * 0.15:.2f}", f"{slot * 0.7:.2f}"
        bar.y, bar.height = f"{HEIGHT - height:.2f}", f"{height:.2f}"
    return chart


def build_trends(definition) -> list[Chart]:
    """The charts for the last TREND_BUILDS finished builds of `definition`, oldest first ([] with fewer than two)."""
    builds = list(Build.objects.filter(definition=definition, run__finished_at__isnull=False)
                  .select_related("run").only("number", "definition_id", "size", "packages", "package_format",
                                              "run__status", "run__started_at", "run__finished_at")
                  .order_by("-number")[:TREND_BUILDS])[::-1]
    if len(builds) < 2:
        return []
    charts = {"duration": Chart("duration", "Build time"), "size": Chart("size", "Image size"),
              "packages": Chart("packages", "Packages")}
    for build in builds:
        status, url = build.run.status, build.get_absolute_url()
        took = ((build.run.finished_at - build.run.started_at).total_seconds()
                if build.run.started_at and build.run.finished_at else None)
        size = build.size if status == RunStatus.SUCCEEDED else None
        packages = len(build.packages or {}) if status == RunStatus.SUCCEEDED and build.package_format else None
        what = "" if status == RunStatus.SUCCEEDED else f", {status}"
        charts["duration"].bars.append(Bar(build.number, url, status, took,
                                           f"build {build.number}: {duration_text(took) if took else 'no time'}{what}"))
        charts["size"].bars.append(Bar(build.number, url, status, size,
                                       f"build {build.number}: {filesizeformat(size) if size else 'no image'}{what}"))
        charts["packages"].bars.append(Bar(build.number, url, status, packages,
                                           f"build {build.number}: "
                                           f"{packages if packages is not None else 'no'} packages{what}"))
    _lay_out(charts["duration"], duration_text)
    _lay_out(charts["size"], filesizeformat)
    _lay_out(charts["packages"], lambda n: f"{int(n)} packages")
    return list(charts.values())
