"""A real build, watched in a real browser on its build page: podman builds a Containerfile whose RUN step prints slowly, in
a real Celery worker that writes through the log sink; daphne streams it into the page's embedded log viewer; Chromium
shows each line as it comes, then the build's status and image, without a reload."""

import re
import time

import pytest

from builds import services as builds
from builds.models import Build
from builds.queues import local_queues
from portal.models import RunStatus
from tests.browser import browser_page, screenshot, sign_in
from tests.builds.fixtures import BASE_IMAGE, WORKER_ENV
from tests.helpers import wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CONTAINERFILE = f"""\
FROM {BASE_IMAGE}
RUN sleep 2; for i in 1 2 3 4 5 6; do printf '\\033[32mtick %s\\033[0m of 6\\n' "$i"; sleep 0.8; done
RUN echo "configured" > /etc/motd
LABEL containers.bootc=1
"""


def test_a_real_build_streams_into_the_browser_line_by_line_then_shows_its_result(
        personas, portal_server, start_worker, oci_registry, local_builder, build_settings, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # ORM calls next to Playwright's event loop
    start_worker(queues=local_queues()[0], concurrency=1, **WORKER_ENV)
    definition = builds.definition_create(team=personas.team, user=personas.developer, name="slow-os")
    revision = builds.revision_create(definition=definition, user=personas.developer, containerfile=CONTAINERFILE,
                                      message="a slow RUN step")
    with browser_page() as page:
        sign_in(page, portal_server.url, "developer")
        build = builds.build_start(revision=revision, user=personas.developer)
        page.goto(portal_server.url + build.get_absolute_url())
        page.wait_for_selector("#log-conn[data-state=live]", timeout=60_000)
        page.evaluate("window.sameDocument = 'yes'")

        # Each tick appears while the build still runs: record when the browser first shows it. (The RUN step waits
        # 2 s before its first tick, so the page is live before it; a tick already on the page when it loaded on a
        # slow machine does not count as arriving.)
        already = page.evaluate("[...document.querySelectorAll('#log-lines .log-line .lt')].map(e => e.textContent)")
        seen = {tick: None for tick in range(1, 7) if f"tick {tick} of 6" in already}
        deadline = time.monotonic() + 120
        while len(seen) < 6 and time.monotonic() < deadline:
            texts = page.evaluate("[...document.querySelectorAll('#log-lines .log-line .lt')].map(e => e.textContent)")
            for tick in range(1, 7):
                if tick not in seen and f"tick {tick} of 6" in texts:
                    seen[tick] = time.monotonic()
                    if tick == 3:
                        # The header followed the run's status and phase as the viewer saw them move.
                        wait_for(lambda: page.locator("#build-live [data-build-status=running]").count() == 1,
                                 timeout=10, what="the build header to say running")
                        screenshot(page, "build-page-mid-build")
            time.sleep(0.05)
        assert sorted(seen) == [1, 2, 3, 4, 5, 6], page.locator("#log-lines").inner_text()[-2000:]
        arrived = [seen[t] for t in range(1, 7) if seen[t] is not None]
        # The RUN step sleeps 0.8 s between ticks: they arrived one by one, not all at once at the end.
        assert len(arrived) >= 4 and arrived == sorted(arrived), seen
        assert arrived[-1] - arrived[0] > 0.5 * (len(arrived) - 1), seen

        tick = page.locator(".log-line", has_text="tick 1 of 6")
        assert tick.locator(".ansi-green-fg").inner_text() == "tick 1"  # podman passed the colour through
        steps = page.locator(".log-line.log-sec-step .lt").all_inner_texts()
        assert re.fullmatch(rf"STEP 1/\d: FROM {BASE_IMAGE}", steps[0])
        assert re.match(r"STEP 2/\d: RUN sleep 2; for i in", steps[1])

        page.wait_for_selector("#build-live [data-build-status=succeeded]", timeout=120_000)
        assert page.evaluate("window.sameDocument") == "yes"  # the result came without a reload
        assert page.locator("#log-conn").get_attribute("data-state") == "ended"
        build = Build.objects.with_related().get(pk=build.pk)
        assert build.run.status == RunStatus.SUCCEEDED and build.digest
        assert build.digest in page.locator("#build-facts").inner_text()  # the image's facts came with it
        shown = page.evaluate("[...document.querySelectorAll('#log-lines .log-line')].map(r => +r.id.slice(1))")
        assert shown == list(range(1, build.run.log_lines + 1))  # every line, once, in order
