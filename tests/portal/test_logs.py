"""Run logs beyond the basics: sections, long lines, terminal rewrites, paging, server-side search, the viewer's endpoints
and who may read them. (The sink's batching and the reaper are in test_runs.py; the websocket in test_consumer.py and
test_consumer_access.py.)"""

import gzip
import json

import pytest

from portal import logsink, services
from portal.logtext import SectionDetector, cut_for_display, strip_ansi, terminal_line
from portal.models import LogChunk, LogSection, RunKind, RunStatus

pytestmark = pytest.mark.django_db

# What podman 4.3 printed here for a two-stage Containerfile (captured from a real build on this machine).
PODMAN_OUTPUT = """\
[1/2] STEP 1/2: FROM localhost/base:latest AS builder
[1/2] STEP 2/2: RUN echo building; printf '\\033[32mgreen ok\\033[0m\\n'
building
\x1b[32mgreen ok\x1b[0m
--> b9b41d85255
[2/2] STEP 1/4: FROM localhost/base:latest
[2/2] STEP 2/4: COPY --from=builder /etc/passwd /etc/passwd2
--> 95d63f643a2
[2/2] STEP 3/4: RUN for i in 1 2 3; do echo "line $i"; sleep 0.2; done
line 1
line 2
line 3
--> 1ee24840811
[2/2] STEP 4/4: LABEL containers.bootc=1
[2/2] COMMIT localhost/test:1
--> d8d5bab47ce
Successfully tagged localhost/test:1"""

# bootc-image-builder --progress verbose: its pulse lines, then osbuild's LogMonitor (bold titles on a terminal).
BIB_OUTPUT = """\
Manifest generation step
Building manifest for bootc-based-qcow2
Image building step
Building manifest-qcow2.json
\x1b[1mPipeline build: 7a1ccd8bd9d6c3c1f5b9d4a2e0f8b6c4d2e0f8a6b4c2d0e8f6a4b2c0d8e6f4a2\x1b[0m
Build
  root: <host>
\x1b[1morg.osbuild.rpm: 5b1e2a9f0c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5061728394a5b6c7d\x1b[0m {
  "gpgkeys": []
}
⏱  Duration: 12s
org.osbuild.selinux: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef {}
Pipeline qcow2: 1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
Assembler org.osbuild.qemu: 2123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef {
}
Build complete!"""


def detect(text):
    detector = SectionDetector()
    return [(i + 1, *found) for i, line in enumerate(text.split("\n")) if (found := detector.feed(line))]


@pytest.fixture
def run(personas):
    run = services.run_create(kind=RunKind.BUILD, title="build web-os", team=personas.team, started_by=personas.developer)
    services.run_start(run)
    return run


def write(run, lines, **sink_attrs):
    with logsink.LogSink(run, publish=False) as sink:
        for name, value in sink_attrs.items():
            setattr(sink, name, value)
        for line in lines:
            sink.write(line)
    return sink


class TestSections:
    def test_every_podman_step_starts_a_section(self):
        assert detect(PODMAN_OUTPUT) == [
            (1, "step", "[1/2] STEP 1/2: FROM localhost/base:latest AS builder"),
            (2, "step", "[1/2] STEP 2/2: RUN echo building; printf '\\033[32mgreen ok\\033[0m\\n'"),
            (6, "step", "[2/2] STEP 1/4: FROM localhost/base:latest"),
            (7, "step", "[2/2] STEP 2/4: COPY --from=builder /etc/passwd /etc/passwd2"),
            (9, "step", '[2/2] STEP 3/4: RUN for i in 1 2 3; do echo "line $i"; sleep 0.2; done'),
            (14, "step", "[2/2] STEP 4/4: LABEL containers.bootc=1"),
        ]

    def test_single_stage_steps_too(self):
        assert detect("STEP 1/3: FROM quay.io/fedora/fedora-bootc:42\nSTEP 2/3: RUN dnf -y install tmux") == [
            (1, "step", "STEP 1/3: FROM quay.io/fedora/fedora-bootc:42"), (2, "step", "STEP 2/3: RUN dnf -y install tmux")]

    def test_bootc_image_builder_steps_pipelines_and_stages(self):
        assert detect(BIB_OUTPUT) == [
            (1, "bib", "Manifest generation step"),
            (3, "bib", "Image building step"),
            (5, "pipeline", "Pipeline build"),
            (8, "stage", "org.osbuild.rpm"),
            (12, "stage", "org.osbuild.selinux"),
            (13, "pipeline", "Pipeline qcow2"),
            (14, "stage", "org.osbuild.qemu"),
        ]

    def test_older_bib_manifest_lines(self):
        found = detect("Generating manifest manifest-qcow2.json\nDONE\nBuilding manifest-qcow2.json\nPipeline build: "
                       + "a" * 64)
        assert [kind for _, kind, _ in found] == ["bib", "bib", "pipeline"]

    def test_runner_groups(self):
        assert detect("::group::Pushing the image\npushed\n::endgroup::\n::group::\n:: not a marker") == [
            (1, "group", "Pushing the image"), (3, "end", ""), (4, "group", "Group")]

    def test_ordinary_lines_start_nothing(self):
        assert detect("STEP: no\nPipeline of work\norg.osbuild.rpm is great {\nSuccessfully tagged x\n\n[1/2] COMMIT x") == []

    def test_the_sink_records_sections_with_their_lines(self, run):
        write(run, PODMAN_OUTPUT.split("\n") + BIB_OUTPUT.split("\n"))
        sections = list(LogSection.objects.filter(run=run).values_list("seq", "kind", "title"))
        assert sections[0] == (1, "step", "[1/2] STEP 1/2: FROM localhost/base:latest AS builder")
        assert [kind for _, kind, _ in sections].count("stage") == 3
        assert all(s.started_at for s in LogSection.objects.filter(run=run))

    def test_a_runaway_log_gets_a_bounded_outline(self, run, monkeypatch):
        monkeypatch.setattr(logsink, "MAX_SECTIONS", 5)
        write(run, [f"STEP {i}/100: RUN true" for i in range(1, 101)])
        assert LogSection.objects.filter(run=run).count() == 5


class TestLines:
    def test_a_carriage_return_rewrites_the_line_as_a_terminal_would(self, run):
        write(run, ["Copying blob 10%\rCopying blob 55%\rCopying blob done\r", "plain\r\n"])
        assert [text for _, text in logsink.lines_after(run)] == ["Copying blob done", "plain"]
        assert terminal_line("\r\r") == ""

    def test_a_huge_line_is_stored_cut_with_a_note(self, run, settings):
        settings.RUN_LOG_LINE_MAX_CHARS = 1000
        write(run, ["x" * 5000, "next"])
        stored = logsink.line(run, 1)
        assert stored.startswith("x" * 1000) and "4,000 more characters not kept" in stored
        assert logsink.line(run, 2) == "next"

    def test_lines_over_the_display_limit_are_cut_in_messages_and_marked(self, run, settings):
        settings.RUN_LOG_DISPLAY_LINE_CHARS = 100
        write(run, ["short", "y" * 250])
        (chunk,) = LogChunk.objects.filter(run=run)
        message = json.loads(logsink.batch_message(chunk)["json"])
        assert message["lines"] == ["short", "y" * 100] and message["cut"] == [[2, 250]]
        assert logsink.line(run, 2) == "y" * 250  # the whole line is kept

    def test_cut_for_display_leaves_short_lines_alone(self):
        lines = ["a", "b"]
        assert cut_for_display(lines, 1, 10) == (lines, [])

    def test_strip_ansi(self):
        assert strip_ansi("\x1b[1;31merror\x1b[0m: \x1b]8;;http://x\x07link\x1b]8;;\x07") == "error: link"


class TestPaging:
    @pytest.fixture
    def long_run(self, run, settings):
        settings.RUN_LOG_BATCH_LINES = 100
        write(run, [f"line {i}" for i in range(1, 1001)], batch_lines=100)
        return run

    def test_the_first_lines_of_a_range(self, long_run):
        first, lines, times = logsink.lines_between(long_run, after=150, before=500, limit=20)
        assert first == 151 and lines == [f"line {i}" for i in range(151, 171)] and len(times) == 20

    def test_the_last_lines_before_a_line(self, long_run):
        first, lines, _ = logsink.lines_between(long_run, before=451, limit=120, from_end=True)
        assert first == 331 and lines[-1] == "line 450" and len(lines) == 120

    def test_the_tail(self, long_run):
        assert logsink.tail(long_run, 3) == [(998, "line 998"), (999, "line 999"), (1000, "line 1000")]
        assert logsink.last_seq(long_run) == 1000

    def test_past_the_end_is_empty(self, long_run):
        assert logsink.lines_between(long_run, after=1000) == (1001, [], [])

    def test_it_reads_only_the_chunks_it_needs(self, long_run, django_assert_max_num_queries):
        with django_assert_max_num_queries(1):
            logsink.lines_between(long_run, after=500, limit=50)


class TestSearch:
    @pytest.fixture
    def searchable(self, run, settings):
        settings.RUN_LOG_BATCH_LINES = 7
        lines = [f"ok {i}" for i in range(1, 101)]
        lines[9] = "ERROR: disk full"
        lines[10] = "error again, error twice on one line"
        lines[49] = "\x1b[31merr\x1b[0mor spanning a colour change"
        lines[98] = "Straße ERROR ß"
        write(run, lines, batch_lines=7)
        return run

    def test_it_counts_matching_lines_exactly_across_chunks_colours_and_case(self, searchable):
        found = logsink.search(searchable, "error")
        assert found == {"count": 4, "seqs": [10, 11, 50, 99]}

    def test_it_pages_through_matches(self, searchable):
        # "ok 1", "ok 12".."ok 19", "ok 100" (lines 10 and 11 say error): 10 in all, one after line 50
        assert logsink.search(searchable, "ok 1", after=50, max_positions=3) == {"count": 10, "seqs": [100]}
        assert logsink.search(searchable, "ok", max_positions=2)["seqs"] == [1, 2]

    def test_unicode_case_folding(self, searchable):
        assert logsink.search(searchable, "STRASSE")["seqs"] == [99]

    def test_no_match(self, searchable):
        assert logsink.search(searchable, "segfault") == {"count": 0, "seqs": []}

    def test_it_agrees_with_a_line_by_line_search(self, run, settings):
        import random

        rng = random.Random(7)
        words = ["alpha", "Beta", "GAMMA", "delta", "\x1b[32mok\x1b[0m", "", "beta-gamma"]
        lines = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 6))) for _ in range(3000)]
        write(run, lines, batch_lines=97)
        for query in ("beta", "gamma", "a g", "ok", "OK beta", "-"):
            expected = [i + 1 for i, line in enumerate(lines) if query.casefold() in strip_ansi(line).casefold()]
            found = logsink.search(run, query)
            assert found["count"] == len(expected) and found["seqs"] == expected, query


class TestViewerEndpoints:
    @pytest.fixture
    def big_run(self, run, settings):
        settings.RUN_LOG_BATCH_LINES = 200
        write(run, [*PODMAN_OUTPUT.split("\n"), *[f"\x1b[33mline {i}\x1b[0m" for i in range(18, 2001)]], batch_lines=200)
        return run

    def test_the_page_renders_only_the_tail_and_the_outline(self, big_run, client_for, personas):
        from portal.views import TAIL_LINES

        page = client_for(personas.viewer).get(f"/runs/{big_run.pk}/").content.decode()
        assert page.count('class="log-line') == TAIL_LINES
        assert f'id="L{2000 - TAIL_LINES + 1}"' in page and 'id="L1"' not in page
        assert f'class="log-gap" data-after="0" data-before="{2000 - TAIL_LINES + 1}"' in page
        outline = json.loads(page.split('id="log-outline-data" type="application/json">')[1].split("</script>")[0])
        assert [entry[:2] for entry in outline][:3] == [[1, "step"], [2, "step"], [6, "step"]]

    def test_pages_of_lines_as_json(self, big_run, client_for, personas):
        client = client_for(personas.viewer)
        data = client.get(f"/runs/{big_run.pk}/log/lines/", {"after": 0, "before": 100, "limit": 10}).json()
        assert data["first"] == 1 and len(data["lines"]) == 10 and data["last"] == 2000
        assert [s[0] for s in data["sections"]] == [1, 2, 6, 7, 9]
        data = client.get(f"/runs/{big_run.pk}/log/lines/", {"before": 1501, "limit": 1000, "end": "1"}).json()
        assert data["first"] == 501 and data["lines"][-1] == "\x1b[33mline 1500\x1b[0m"

    def test_junk_parameters_never_fail(self, big_run, client_for, personas):
        client = client_for(personas.viewer)
        for params in ({"after": "x"}, {"after": "-5", "limit": "0"}, {"before": "nan"}, {"limit": "99999999"}):
            assert client.get(f"/runs/{big_run.pk}/log/lines/", params).status_code == 200
            assert client.get(f"/runs/{big_run.pk}/log/", params, HTTP_HX_REQUEST="true").status_code == 200
            assert client.get(f"/runs/{big_run.pk}/log/search/", {"q": "line", **params}).status_code == 200
        assert client.get(f"/runs/{big_run.pk}/log/line/99999/").status_code == 404

    def test_search_answers_the_exact_count_and_positions(self, big_run, client_for, personas):
        client = client_for(personas.viewer)
        data = client.get(f"/runs/{big_run.pk}/log/search/", {"q": "LINE 19"}).json()
        assert data["count"] == 111 and data["seqs"][:3] == [19, 190, 191] and data["more"] is False
        data = client.get(f"/runs/{big_run.pk}/log/search/", {"q": "line", "limit": 5}).json()
        # "line 18".."line 2000", and 4 lines of podman's output
        assert data["count"] == 1983 + 4 and len(data["seqs"]) == 5 and data["more"] is True
        assert client.get(f"/runs/{big_run.pk}/log/search/", {"q": "   "}).json()["count"] == 0

    def test_one_whole_line(self, big_run, client_for, personas):
        response = client_for(personas.viewer).get(f"/runs/{big_run.pk}/log/line/20/")
        assert response.content == b"\x1b[33mline 20\x1b[0m" and response["Content-Type"].startswith("text/plain")

    def test_the_polling_fallback_sends_rows_sections_and_the_status_out_of_band(self, run, client_for, personas,
                                                                                monkeypatch):
        write(run, PODMAN_OUTPUT.split("\n"))
        client = client_for(personas.viewer)
        response = client.get(f"/runs/{run.pk}/log/", {"after": 5}, HTTP_HX_REQUEST="true")
        html = response.content.decode()
        assert response.status_code == 200 and 'id="L6"' in html and 'id="L5"' not in html
        assert 'data-sk="step" data-st="[2/2] STEP 1/4: FROM localhost/base:latest"' in html
        assert 'id="run-status" hx-swap-oob="true"' in html and 'data-done="0"' in html
        services.run_finish(run, status=RunStatus.FAILED, reason="STEP 3/4 failed", log_lines=17)
        done = client.get(f"/runs/{run.pk}/log/", {"after": 17}, HTTP_HX_REQUEST="true")
        assert done.status_code == 286 and 'data-done="1"' in done.content.decode()
        assert "STEP 3/4 failed" in done.content.decode()
        # Lines not yet sent keep the polling going, even after the run ended.
        monkeypatch.setattr("portal.views.PAGE_LINES_MAX", 5)
        assert client.get(f"/runs/{run.pk}/log/", {"after": 3}, HTTP_HX_REQUEST="true").status_code == 200
        assert client.get(f"/runs/{run.pk}/log/", {"after": 12}, HTTP_HX_REQUEST="true").status_code == 286

    def test_raw_download_streams_every_chunk(self, big_run, client_for, personas):
        client = client_for(personas.viewer)
        plain = b"".join(client.get(f"/runs/{big_run.pk}/log.txt").streaming_content)
        assert plain.count(b"\n") == 2000 and plain.startswith(b"[1/2] STEP 1/2")
        packed = client.get(f"/runs/{big_run.pk}/log.txt", {"gzip": "1"})
        assert packed["Content-Disposition"] == f'attachment; filename="run-{big_run.pk}.log.gz"'
        assert gzip.decompress(b"".join(packed.streaming_content)) == plain

    def test_the_result_is_on_the_page_once_the_run_ended(self, run, client_for, personas):
        write(run, ["done"])
        services.run_finish(run, status=RunStatus.SUCCEEDED, reason="Pushed sha256:abc", log_lines=1)
        page = client_for(personas.viewer).get(f"/runs/{run.pk}/").content.decode()
        assert "run-result-succeeded" in page and "Pushed sha256:abc" in page and "1 line of log" in page


LOG_URLS = ["/runs/{pk}/", "/runs/{pk}/log/", "/runs/{pk}/log/lines/", "/runs/{pk}/log/line/1/",
            "/runs/{pk}/log/search/?q=a", "/runs/{pk}/log.txt", "/runs/{pk}/log.txt?gzip=1"]


class TestWhoMayRead:
    @pytest.fixture
    def runs(self, personas):
        build = services.run_create(kind=RunKind.BUILD, title="build", team=personas.team)
        host = services.run_create(kind=RunKind.HOST_ACTION, title="upgrade web-01", team=personas.team)
        for run in (build, host):
            write(run, ["a line"])
        return build, host

    @pytest.mark.parametrize("url", LOG_URLS)
    def test_anonymous_users_are_sent_to_log_in(self, runs, client_for, url):
        response = client_for(None).get(url.format(pk=runs[0].pk))
        assert response.status_code == 302 and response["Location"].startswith("/login/")

    @pytest.mark.parametrize("url", LOG_URLS)
    def test_outsiders_get_not_found(self, runs, client_for, personas, url):
        assert client_for(personas.outsider).get(url.format(pk=runs[0].pk)).status_code == 404

    @pytest.mark.parametrize("url", LOG_URLS)
    def test_team_members_with_any_role_may_read(self, runs, client_for, personas, url):
        for user in (personas.viewer, personas.operator, personas.developer, personas.superuser):
            assert client_for(user).get(url.format(pk=runs[0].pk), HTTP_HX_REQUEST="true").status_code == 200, user

    @pytest.mark.parametrize("url", LOG_URLS)
    def test_helpdesk_reads_host_runs_but_not_builds(self, runs, client_for, personas, url):
        client = client_for(personas.helpdesk)
        assert client.get(url.format(pk=runs[0].pk), HTTP_HX_REQUEST="true").status_code == 404
        assert client.get(url.format(pk=runs[1].pk), HTTP_HX_REQUEST="true").status_code == 200

    def test_unknown_runs_are_not_found(self, client_for, personas):
        assert client_for(personas.developer).get("/runs/999999/log/lines/").status_code == 404

    def test_read_only_members_see_no_cancel_button(self, personas, client_for):
        run = services.run_create(kind=RunKind.BUILD, title="build", team=personas.team)
        assert 'id="run-cancel"' not in client_for(personas.viewer).get(f"/runs/{run.pk}/").content.decode()
        assert 'id="run-cancel"' in client_for(personas.developer).get(f"/runs/{run.pk}/").content.decode()


def test_readers_read_a_few_chunks_per_query(run, settings, django_assert_num_queries):
    write(run, [f"hit {i}" for i in range(1, 1001)], batch_lines=100)  # 10 chunks: two pages of 8
    assert logsink.search(run, "HIT")["count"] == 1000  # one streaming cursor (SAVEPOINT, DECLARE, FETCHes)
    with django_assert_num_queries(2):
        assert len(list(logsink.each_chunk(run, reverse=True))) == 10
    with django_assert_num_queries(1):
        assert logsink.tail(run, 150)[0] == (851, "hit 851")


class TestBatching:
    def test_a_line_after_a_quiet_spell_is_written_at_once_and_a_burst_is_batched(self, run, settings):
        import time

        settings.RUN_LOG_BATCH_SECONDS = 0.05
        sink = logsink.LogSink(run, publish=False)
        time.sleep(0.06)  # quiet
        sink.write("first after a pause")
        assert LogChunk.objects.filter(run=run).count() == 1
        for i in range(50):  # a burst right after it: waits for its batch
            sink.write(f"burst {i}")
        assert LogChunk.objects.filter(run=run).count() == 1
        time.sleep(0.06)
        sink.poll()
        assert [(c.first_seq, c.last_seq) for c in LogChunk.objects.filter(run=run)] == [(1, 1), (2, 51)]
