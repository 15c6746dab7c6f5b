"""Build trends on a definition's page: time, image size and packages of the last builds as SVG bars, each linking to
its build, the failed ones marked."""

from datetime import timedelta

import pytest
from django.db.models import F

from builds.models import Build, ImageDefinition, Revision
from builds.trends import TREND_BUILDS, build_trends, duration_text
from portal import services as portal_services
from portal.models import Run, RunStatus

pytestmark = pytest.mark.django_db


def finished_build(definition, revision, number, *, status=RunStatus.SUCCEEDED, seconds=60, size=None, packages=None):
    run = portal_services.run_create(kind="build", title=f"build {number}", team=definition.team)
    portal_services.run_start(run)
    portal_services.run_finish(run, status=status, reason="" if status == RunStatus.SUCCEEDED else "boom")
    Run.objects.filter(pk=run.pk).update(finished_at=F("started_at") + timedelta(seconds=seconds))
    ok = status == RunStatus.SUCCEEDED
    return Build.objects.create(definition=definition, revision=revision, number=number, run=run,
                                digest=f"sha256:{number:064x}" if ok else "", size=size if ok else None,
                                packages=packages or {} if ok else {}, package_format="rpm" if ok else "")


@pytest.fixture
def definition(personas):
    definition = ImageDefinition.objects.create(team=personas.team, name="web-os", repository="r.example/web-os")
    revision = Revision.objects.create(definition=definition, number=1, containerfile="FROM x", sha256="0" * 64)
    finished_build(definition, revision, 1, seconds=120, size=1000, packages={"a": "1", "b": "1"})
    finished_build(definition, revision, 2, status=RunStatus.FAILED, seconds=30)
    finished_build(definition, revision, 3, seconds=240, size=2000, packages={"a": "1", "b": "1", "c": "1", "d": "1"})
    return definition


def test_durations_read_as_people_say_them():
    assert duration_text(42) == "42 s"
    assert duration_text(120) == "2 min"
    assert duration_text(185) == "3 min 5 s"
    assert duration_text(3 * 3600 + 60 * 7) == "3 h 7 min"


def test_each_chart_has_a_bar_per_build_as_tall_as_its_share(definition):
    duration, size, packages = build_trends(definition)
    assert [bar.number for bar in duration.bars] == [1, 2, 3]
    assert duration.top == "4 min" and duration.bars[2].height == "58.00" and duration.bars[0].height == "29.00"
    assert duration.failures == 1 and duration.bars[1].status == "failed" and duration.bars[1].value == 30
    # A failed build has no image: a short mark on the baseline, still red.
    assert size.bars[1].value is None and size.bars[1].height == "3.00" and "failed" in size.bars[1].text
    assert packages.bars[2].text == "build 3: 4 packages" and packages.bars[0].height == "29.00"


def test_the_definition_page_draws_the_trends_with_links_and_no_inline_style(client_for, personas, definition):
    html = client_for(personas.viewer).get(definition.get_absolute_url()).content.decode()
    trends = html.split('class="card mt-4 build-trends"')[1].split('class="card-body"><div')[1]
    assert trends.count("<rect ") == 9 and trends.count('class="tr-failed') == 3
    assert f'<a href="{Build.objects.get(definition=definition, number=2).get_absolute_url()}" aria-label="build 2' in trends
    assert "<title>build 1: 2 min</title>" in trends
    assert 'style="' not in trends


def test_one_build_draws_no_trend_and_only_the_last_ones_are_drawn(client_for, personas, definition):
    revision = definition.revisions.get()
    for number in range(4, 4 + TREND_BUILDS):
        finished_build(definition, revision, number, size=number)
    assert [bar.number for bar in build_trends(definition)[0].bars] == list(range(4, 4 + TREND_BUILDS))
    Build.objects.filter(definition=definition, number__gt=1).delete()
    assert build_trends(definition) == []
    assert "build-trends" not in client_for(personas.viewer).get(definition.get_absolute_url()).content.decode()
