"""Runs and their logs: conditional status changes, the batched log sink, and the reaper."""

from datetime import timedelta

import pytest
from django.utils import timezone

from portal import logsink, services
from portal.models import LogChunk, Run, RunKind, RunStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(personas):
    return services.run_create(kind=RunKind.BUILD, title="build web-os", team=personas.team,
                               started_by=personas.developer, subject=personas.team)


class TestStatusChanges:
    def test_a_run_starts_once(self, run):
        services.run_start(run)
        assert run.status == RunStatus.RUNNING and run.started_at and run.worker
        with pytest.raises(services.RunStateError, match="is running"):
            services.run_start(Run.objects.get(pk=run.pk))

    def test_a_run_ends_once(self, run):
        services.run_start(run)
        services.run_finish(run, status=RunStatus.SUCCEEDED)
        stale_copy = Run.objects.get(pk=run.pk)
        stale_copy.status = RunStatus.RUNNING  # a second worker that still thinks it runs
        with pytest.raises(services.RunStateError):
            services.run_finish(stale_copy, status=RunStatus.FAILED, reason="late")
        run.refresh_from_db()
        assert run.status == RunStatus.SUCCEEDED and run.exit_reason == ""

    def test_a_reason_quoting_a_nul_from_a_tool_is_stored_with_a_replacement_character(self, run):
        services.run_start(run)
        services.run_set_phase(run, "pha\x00se")
        services.run_finish(run, status=RunStatus.FAILED, reason="podman exited: err\x00or")
        run.refresh_from_db()
        assert run.exit_reason == "podman exited: err\ufffdor"

    def test_it_records_who_started_it_and_what_it_belongs_to(self, run, personas):
        assert run.started_by == personas.developer
        assert run.subject == personas.team
        assert run.trigger == "button"

    def test_cancelling_a_queued_run_ends_it_at_once(self, run, personas):
        services.run_request_cancel(run=run, user=personas.developer)
        run.refresh_from_db()
        assert run.status == RunStatus.CANCELLED and "developer" in run.exit_reason

    def test_cancelling_a_running_run_asks_its_worker(self, run, personas):
        services.run_start(run)
        services.run_request_cancel(run=run, user=personas.developer)
        run.refresh_from_db()
        assert run.status == RunStatus.RUNNING and run.cancel_requested_at is not None

    def test_the_phase_shows_what_a_running_run_does(self, run):
        services.run_start(run)
        services.run_set_phase(run, "pushing")
        assert Run.objects.get(pk=run.pk).phase == "pushing"


class TestLogSink:
    def test_lines_are_numbered_from_one_and_read_back(self, run):
        with logsink.LogSink(run, publish=False) as sink:
            for i in range(10):
                sink.write(f"line {i}")
        assert logsink.lines_after(run, 0) == [(i + 1, f"line {i}") for i in range(10)]
        assert logsink.lines_after(run, 7) == [(8, "line 7"), (9, "line 8"), (10, "line 9")]
        assert Run.objects.get(pk=run.pk).log_lines == 10

    def test_one_insert_per_batch_never_per_line(self, run, settings, django_assert_num_queries):
        settings.RUN_LOG_BATCH_LINES = 500
        settings.RUN_LOG_BATCH_SECONDS = 3600
        sink = logsink.LogSink(run, publish=False)
        with django_assert_num_queries(3):  # 3 full batches of 500 lines: 3 INSERTs
            for i in range(1500):
                sink.write(f"line {i}")
        assert LogChunk.objects.filter(run=run).count() == 3
        assert [(c.first_seq, c.last_seq) for c in LogChunk.objects.filter(run=run)] == [
            (1, 500), (501, 1000), (1001, 1500)]

    def test_a_quiet_stream_is_flushed_after_the_batch_time(self, run, settings):
        settings.RUN_LOG_BATCH_SECONDS = 0.01
        sink = logsink.LogSink(run, publish=False)
        sink.batch_seconds = 0.01
        sink.write("only line")
        assert not LogChunk.objects.filter(run=run).exists()
        import time

        time.sleep(0.02)
        sink.poll()
        assert logsink.lines_after(run) == [(1, "only line")]

    def test_big_output_is_cut_into_bounded_chunks(self, run, settings):
        sink = logsink.LogSink(run, publish=False)
        sink.chunk_bytes = 10_000
        for _ in range(50):
            sink.write("x" * 1000)
        sink.close()
        assert all(len(c.text) <= 11_000 for c in LogChunk.objects.filter(run=run))
        assert logsink.lines_after(run)[-1][0] == 50

    def test_multi_line_writes_and_carriage_returns(self, run):
        with logsink.LogSink(run, publish=False) as sink:
            sink.write("a\nb\r\nc\n")
            sink.write("")
        assert [text for _, text in logsink.lines_after(run)] == ["a", "b", "c", ""]

    def test_a_nul_byte_in_the_output_shows_as_a_replacement_character_and_the_log_goes_on(self, run):
        with logsink.LogSink(run, publish=False) as sink:
            sink.write("binary \x00\x00 output")
            sink.write("the next line")
        assert logsink.lines_after(run) == [(1, "binary \ufffd\ufffd output"), (2, "the next line")]
        assert Run.objects.get(pk=run.pk).log_lines == 2

    def test_a_second_sink_continues_the_numbering(self, run):
        with logsink.LogSink(run, publish=False) as sink:
            sink.write("first")
        with logsink.LogSink(run, publish=False) as sink:
            sink.write("second")
        assert logsink.lines_after(run) == [(1, "first"), (2, "second")]

    def test_tail_reads_only_the_last_chunks(self, run, settings):
        settings.RUN_LOG_BATCH_LINES = 100
        with logsink.LogSink(run, publish=False) as sink:
            for i in range(1, 1001):
                sink.write(f"line {i}")
        tail = logsink.tail(run, 150)
        assert tail[0] == (851, "line 851") and tail[-1] == (1000, "line 1000") and len(tail) == 150

    def test_lines_keep_their_arrival_time(self, run):
        before = timezone.now()
        with logsink.LogSink(run, publish=False) as sink:
            sink.write("stamped")
        (chunk,) = LogChunk.objects.filter(run=run)
        ((seq, when, text),) = chunk.timed_lines()
        assert seq == 1 and text == "stamped" and before <= when <= timezone.now()

    def test_whole_chunks_can_be_read(self, run, settings):
        settings.RUN_LOG_BATCH_LINES = 2
        with logsink.LogSink(run, publish=False) as sink:
            for i in range(5):
                sink.write(str(i))
        assert [c.lines() for c in logsink.chunks(run)] == [["0", "1"], ["2", "3"], ["4"]]
        assert [c.lines() for c in logsink.chunks(run, after=2)] == [["2", "3"], ["4"]]


class TestReaper:
    def test_a_run_whose_worker_stopped_beating_is_failed_with_the_reason(self, run, settings):
        services.run_start(run)
        Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - settings.RUN_STALE_AFTER - timedelta(1))
        assert [r.pk for r in services.reap_stale_runs()] == [run.pk]
        run.refresh_from_db()
        assert run.status == RunStatus.FAILED and "stopped responding" in run.exit_reason
        assert run.finished_at is not None

    def test_a_run_that_beats_is_left_alone(self, run):
        services.run_start(run)
        assert services.run_heartbeat(run)
        assert services.reap_stale_runs() == []

    def test_a_run_no_worker_picked_up_expires(self, run, settings):
        Run.objects.filter(pk=run.pk).update(created_at=timezone.now() - settings.RUN_QUEUED_EXPIRES_AFTER * 2)
        services.reap_stale_runs()
        run.refresh_from_db()
        assert run.status == RunStatus.FAILED and "No worker picked it up" in run.exit_reason

    def test_finished_runs_are_never_reaped(self, run, settings):
        services.run_start(run)
        services.run_finish(run, status=RunStatus.SUCCEEDED)
        Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(days=3))
        assert services.reap_stale_runs() == []

    def test_a_reaped_run_cannot_be_finished_by_its_late_worker(self, run, settings):
        services.run_start(run)
        Run.objects.filter(pk=run.pk).update(heartbeat_at=timezone.now() - timedelta(days=1))
        services.reap_stale_runs()
        assert not services.run_heartbeat(run)
        with pytest.raises(services.RunStateError):
            services.run_finish(run, status=RunStatus.SUCCEEDED)


class TestLogViews:
    def test_the_fallback_poll_returns_new_lines_then_286_when_done(self, run, client_for, personas):
        services.run_start(run)
        with logsink.LogSink(run, publish=False) as sink:
            sink.write("one\ntwo")
        client = client_for(personas.viewer)
        response = client.get(f"/runs/{run.pk}/log/", {"after": 1}, HTTP_HX_REQUEST="true")
        assert response.status_code == 200 and b'id="L2"' in response.content and b'id="L1"' not in response.content
        services.run_finish(run, status=RunStatus.SUCCEEDED, log_lines=2)
        assert client.get(f"/runs/{run.pk}/log/", {"after": 2}, HTTP_HX_REQUEST="true").status_code == 286
        assert client.get(f"/runs/{run.pk}/log/", {"after": "junk"}, HTTP_HX_REQUEST="true").status_code == 286

    def test_raw_download_plain_and_gzip(self, run, client_for, personas):
        import gzip

        with logsink.LogSink(run, publish=False) as sink:
            sink.write("\x1b[31mred\x1b[0m\nplain")
        client = client_for(personas.viewer)
        plain = b"".join(client.get(f"/runs/{run.pk}/log.txt").streaming_content)
        assert plain == b"\x1b[31mred\x1b[0m\nplain\n"
        packed = b"".join(client.get(f"/runs/{run.pk}/log.txt", {"gzip": "1"}).streaming_content)
        assert gzip.decompress(packed) == plain

    def test_the_run_page_shows_the_tail_and_escapes_it(self, run, client_for, personas):
        with logsink.LogSink(run, publish=False) as sink:
            sink.write("<script>alert(1)</script>")
        page = client_for(personas.viewer).get(f"/runs/{run.pk}/").content.decode()
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert(1)" not in page


def test_the_log_fragment_opened_as_a_page_sends_the_reader_to_the_runs_page(personas, client_for):
    run = Run.objects.create(team=personas.team, kind="build", title="a build")
    response = client_for(personas.viewer).get(f"/runs/{run.pk}/log/", {"after": 0})
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.pk}/"
    assert client_for(personas.outsider).get(f"/runs/{run.pk}/log/").status_code == 404
