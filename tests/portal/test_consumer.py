"""The run log websocket's lines: backlog then live lines, no gap and no duplicate across reconnects, many sockets of one
run, long logs and sections, a channel layer that loses things, heartbeats and batching, and archived logs."""

import json
import time

import pytest
from asgiref.sync import sync_to_async

from portal import live, logarchive, logsink, services
from portal.models import LogChunk, Run, RunStatus
from tests.portal.logsockets import communicator, lines_of, make_run, receive_until, receive_until_status

# Each test gets a channel layer of its own (tests/portal/conftest.py says why).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("a_channel_layer_of_the_tests_own")]


class TestStreaming:
    async def test_backlog_then_live_lines_then_the_final_status(self, async_personas):
        run, sink = await sync_to_async(make_run)(async_personas.team, lines=3)
        comm = communicator(run.pk, async_personas.viewer)
        await comm.connect()
        first = await receive_until_status(comm)
        assert lines_of(first)[1] == ["line 1", "line 2", "line 3"]

        def more():
            sink.write("line 4\nline 5")
            sink.flush()
            sink.close()
            services.run_finish(run, status=RunStatus.SUCCEEDED, log_lines=sink.last_seq)
            live.wait_published()

        await sync_to_async(more)()
        rest = await receive_until_status(comm)
        assert lines_of(rest)[0] == [4, 5]
        assert rest[-1]["status"] == "succeeded" and rest[-1]["finished"] is True
        await comm.disconnect()

    async def test_reconnecting_with_after_resumes_without_gap_or_duplicate(self, async_personas):
        run, sink = await sync_to_async(make_run)(async_personas.team, lines=10)
        comm = communicator(run.pk, async_personas.viewer, after=0)
        await comm.connect()
        seen = lines_of(await receive_until_status(comm))[0]
        await comm.disconnect()

        def meanwhile():
            for i in range(11, 21):
                sink.write(f"line {i}")
            sink.flush()

        await sync_to_async(meanwhile)()
        comm = communicator(run.pk, async_personas.viewer, after=seen[-1])
        await comm.connect()
        seen += lines_of(await receive_until_status(comm))[0]
        await comm.disconnect()
        assert seen == list(range(1, 21))

    async def test_a_batch_lost_in_the_channel_layer_is_filled_from_the_database(self, async_personas):
        run, sink = await sync_to_async(make_run)(async_personas.team, lines=2)
        comm = communicator(run.pk, async_personas.viewer)
        await comm.connect()
        await receive_until_status(comm)

        def write_unpublished_then_published():
            sink.publish = False
            sink.write("line 3")
            sink.flush()  # stored, never published
            sink.publish = True
            sink.write("line 4")
            sink.flush()
            live.wait_published()

        await sync_to_async(write_unpublished_then_published)()
        # The hub reads line 3 from the database and hands it out with line 4: one message or two.
        messages = await receive_until(comm, lambda m: m["t"] == "lines" and m["first"] + len(m["lines"]) - 1 == 4)
        assert lines_of(messages)[0] == [3, 4]
        await comm.disconnect()

    async def test_lines_already_sent_are_dropped(self, async_personas):
        run, sink = await sync_to_async(make_run)(async_personas.team, lines=0)
        comm = communicator(run.pk, async_personas.viewer)
        await comm.connect()
        await receive_until_status(comm)
        await sync_to_async(lambda: (sink.write("a"), sink.flush(), live.wait_published()))()
        assert lines_of([await comm.receive_json_from(timeout=5)])[0] == [1]
        chunk = await sync_to_async(lambda: list(logsink.chunks(run))[0])()
        await sync_to_async(lambda: (live.publish(run.group_name(), logsink.batch_message(chunk)),
                                     live.wait_published()))()  # a duplicate batch
        assert await comm.receive_nothing(timeout=0.3)
        await comm.disconnect()


@pytest.fixture
def quick_watchdog(monkeypatch):
    """The watchdog's timings shrunk from seconds to tenths, so its recovery shows within a test's patience."""
    from portal import loghub

    monkeypatch.setattr(loghub, "WATCH_SECONDS", 0.1)
    monkeypatch.setattr(loghub, "CATCH_UP_AFTER_SECONDS", 0.3)
    monkeypatch.setattr(loghub, "CATCH_UP_MAX_SECONDS", 0.6)
    monkeypatch.setattr(loghub, "GROUP_RENEW_SECONDS", 0.3)


class TestManySocketsOfOneRun:
    """Every socket of a run in a process shares one hub: the lines, in order and each once, whatever joins when."""

    async def test_sockets_joining_mid_stream_get_every_line_once_in_order(self, async_personas):
        run, sink = await sync_to_async(make_run)(async_personas.team, lines=5)
        first = communicator(run.pk, async_personas.viewer)
        await first.connect()
        await receive_until_status(first)

        def write(start, end):
            for i in range(start, end + 1):
                sink.write(f"line {i}")
                if i % 3 == 0:
                    sink.flush()
            sink.flush()
            live.wait_published()

        await sync_to_async(write)(6, 40)
        seen_first = lines_of(await receive_until(first, lambda m: m["t"] == "lines" and
                                                  m["first"] + len(m["lines"]) - 1 == 40))[0]
        # One joins with nothing, one from line 12 (in the hub's memory by now), one from line 2 (older than it).
        joiners = {after: communicator(run.pk, async_personas.viewer, after=after) for after in (0, 12, 2)}
        backlog = {}
        for after, comm in joiners.items():
            await comm.connect()
            backlog[after] = lines_of(await receive_until_status(comm))[0]
        await sync_to_async(write)(41, 60)

        def finish():
            sink.close()
            services.run_finish(run, status=RunStatus.SUCCEEDED, log_lines=sink.last_seq)
            live.wait_published()

        await sync_to_async(finish)()
        for after, comm in [(5, first), *joiners.items()]:
            rest = await receive_until(comm, lambda m: m["t"] == "status" and m["finished"])
            seen = (seen_first if comm is first else backlog[after]) + lines_of(rest)[0]
            assert seen == list(range(after + 1, 61)), after
            await comm.disconnect()

    async def test_one_quiet_channel_layer_and_every_socket_still_hears_each_line_once(self, async_personas,
                                                                                      quick_watchdog):
        run, sink = await sync_to_async(make_run)(async_personas.team, lines=1)
        comms = [communicator(run.pk, who) for who in (async_personas.viewer, async_personas.viewer,
                                                       async_personas.developer)]
        for comm in comms:
            await comm.connect()
            await receive_until_status(comm)
        sink.publish = False  # only the hub's catch-up from the database can find these

        def write_then_finish():
            sink.write("quiet 2\nquiet 3")
            sink.flush()
            sink.close()
            services.run_finish(run, status=RunStatus.SUCCEEDED, log_lines=3)  # its status is published

        await sync_to_async(write_then_finish)()
        for comm in comms:
            messages = await receive_until(comm, lambda m: m["t"] == "status" and m["finished"])
            assert lines_of(messages) == ([2, 3], ["quiet 2", "quiet 3"])  # lines before the final status
            await comm.disconnect()


class TestBigLogsAndSections:
    async def test_a_long_backlog_is_announced_not_pushed(self, async_personas, monkeypatch):
        from portal import loghub

        monkeypatch.setattr(loghub, "BACKLOG_MAX_LINES", 30)
        run, _ = await sync_to_async(make_run)(async_personas.team, lines=100)
        comm = communicator(run.pk, async_personas.viewer, after=10)
        await comm.connect()
        messages = await receive_until_status(comm)
        assert messages[0] == {"t": "skip", "from": 11, "to": 70}
        assert lines_of(messages)[0] == list(range(71, 101))
        await comm.disconnect()

    async def test_sections_and_cut_lines_travel_with_their_lines(self, async_personas, settings):
        settings.RUN_LOG_DISPLAY_LINE_CHARS = 40
        run, sink = await sync_to_async(make_run)(async_personas.team, lines=0)

        def write_some():
            sink.write("STEP 1/2: FROM localhost/base\n" + "z" * 50 + "\nSTEP 2/2: RUN true")
            sink.flush()

        await sync_to_async(write_some)()
        comm = communicator(run.pk, async_personas.viewer)
        await comm.connect()
        (stored, _status) = await receive_until_status(comm)
        assert [s[:3] for s in stored["sections"]] == [[1, "step", "STEP 1/2: FROM localhost/base"],
                                                         [3, "step", "STEP 2/2: RUN true"]]
        assert stored["lines"][1] == "z" * 40 and stored["cut"] == [[2, 50]]

        await sync_to_async(lambda: (sink.write("STEP 3/3: LABEL a=b"), sink.flush(), live.wait_published()))()
        live_message = await comm.receive_json_from(timeout=5)
        assert live_message["first"] == 4 and live_message["sections"][0][:2] == [4, "step"]
        assert "type" not in live_message and "run" not in live_message
        await comm.disconnect()

    async def test_the_status_carries_the_pages_own_badge_and_result(self, async_personas):
        run, sink = await sync_to_async(make_run)(async_personas.team, lines=1)
        comm = communicator(run.pk, async_personas.viewer)
        await comm.connect()
        await receive_until_status(comm)

        def finish():
            sink.close()
            services.run_finish(run, status=RunStatus.FAILED, reason="STEP 2/2 exited with 1", log_lines=1)
            live.wait_published()

        await sync_to_async(finish)()
        status = (await receive_until_status(comm))[-1]
        assert status["finished"] and 'data-run-status="failed"' in status["html"]["status"]
        assert "STEP 2/2 exited with 1" in status["html"]["result"] and status["duration_s"] is not None
        await comm.disconnect()


class TestWhenTheChannelLayerLosesThings:
    async def test_lost_memberships_are_renewed_and_missed_lines_and_the_end_come_from_the_database(
            self, async_personas, redis_server, quick_watchdog):
        import redis

        run, sink = await sync_to_async(make_run)(async_personas.team, lines=3)
        comm = communicator(run.pk, async_personas.viewer)
        await comm.connect()
        seen = lines_of(await receive_until_status(comm))[0]
        redis.Redis(unix_socket_path=str(redis_server.socket)).flushall()  # as if Redis had restarted

        def write_then_finish():
            for i in range(4, 8):
                sink.write(f"line {i}")
                sink.flush()
            sink.close()
            services.run_finish(run, status=RunStatus.SUCCEEDED, log_lines=7)
            live.wait_published()

        await sync_to_async(write_then_finish)()
        rest = await receive_until(comm, lambda m: m["t"] == "status" and m["finished"], timeout=10)
        seen += lines_of(rest)[0]
        assert seen == list(range(1, 8))
        await comm.disconnect()

    async def test_a_quiet_socket_still_hears_new_lines_without_the_layer(self, async_personas, redis_server,
                                                                        quick_watchdog):
        run, sink = await sync_to_async(make_run)(async_personas.team, lines=1)
        comm = communicator(run.pk, async_personas.viewer)
        await comm.connect()
        await receive_until_status(comm)
        sink.publish = False  # written, never published: only the watchdog can find these

        await sync_to_async(lambda: (sink.write("unpublished 2\nunpublished 3"), sink.flush()))()
        # Line 2 came after a quiet spell, so the sink stored it at once, in a chunk of its own: one message or two.
        messages = await receive_until(comm, lambda m: m["t"] == "lines" and m["first"] + len(m["lines"]) - 1 == 3,
                                       timeout=5)
        assert lines_of(messages) == ([2, 3], ["unpublished 2", "unpublished 3"])
        await comm.disconnect()

    async def test_no_duplicates_when_the_watchdog_and_live_batches_race(self, async_personas, quick_watchdog):
        run, sink = await sync_to_async(make_run)(async_personas.team, lines=0)
        comm = communicator(run.pk, async_personas.viewer)
        await comm.connect()
        await receive_until_status(comm)

        def write_many():

            for i in range(1, 301):
                sink.write(f"line {i}")
                if i % 7 == 0:
                    sink.flush()
                    time.sleep(0.005)
            sink.close()
            services.run_finish(run, status=RunStatus.SUCCEEDED, log_lines=300)
            live.wait_published()

        await sync_to_async(write_many)()
        messages = await receive_until(comm, lambda m: m["t"] == "status" and m["finished"], timeout=10)
        assert lines_of(messages)[0] == list(range(1, 301))
        await comm.disconnect()

    async def test_a_batch_overlapping_what_was_sent_is_trimmed(self, async_personas):
        import json

        run, _ = await sync_to_async(make_run)(async_personas.team, lines=3)
        comm = communicator(run.pk, async_personas.viewer)
        await comm.connect()
        await receive_until_status(comm)
        viewer_message = logsink.lines_message(2, ["line 2", "line 3", "STEP 1/1: FROM x", "line 5"], [1, 2, 3, 4],
                                               [[4, "step", "STEP 1/1: FROM x", 3]])
        overlapping = {"type": "log.lines", "run": run.pk, "first": 2, "last": 5, "json": json.dumps(viewer_message)}
        await sync_to_async(lambda: (live.publish(run.group_name(), overlapping), live.wait_published()))()
        message = await comm.receive_json_from(timeout=5)
        assert (message["first"], message["lines"], message["times"]) == (4, ["STEP 1/1: FROM x", "line 5"], [3, 4])
        assert message["sections"] == [[4, "step", "STEP 1/1: FROM x", 3]]
        await comm.disconnect()


class TestHeartbeatsAndBatches:
    async def test_a_quiet_socket_hears_a_heartbeat_and_a_ping_gets_a_pong(self, async_personas, monkeypatch):
        from portal import loghub

        monkeypatch.setattr(loghub, "WATCH_SECONDS", 0.05)
        monkeypatch.setattr(loghub, "HEARTBEAT_SECONDS", 0.2)
        run, _ = await sync_to_async(make_run)(async_personas.team, lines=1)
        comm = communicator(run.pk, async_personas.viewer)
        await comm.connect()
        await receive_until_status(comm)
        assert await comm.receive_json_from(timeout=3) == {"t": "ping"}  # nothing else happened: only the heartbeat
        await comm.send_to(text_data="ping")
        assert (await receive_until(comm, lambda m: m["t"] != "ping", timeout=3))[-1] == {"t": "pong"}
        await comm.send_to(text_data="anything else")  # ignored, not an error
        assert (await receive_until(comm, lambda m: True, timeout=3))[-1] == {"t": "ping"}
        await comm.disconnect()

    async def test_a_burst_of_lines_reaches_the_socket_as_one_message_not_one_per_line(self, async_personas):
        run, sink = await sync_to_async(make_run)(async_personas.team)
        comm = communicator(run.pk, async_personas.viewer)
        await comm.connect()
        await receive_until_status(comm)

        def burst():
            sink.batch_seconds = 3600  # only the batch's size or an explicit flush sends it
            for i in range(1, 301):
                sink.write(f"burst {i}")
            sink.flush()
            live.wait_published()

        await sync_to_async(burst)()
        message = await comm.receive_json_from(timeout=5)
        assert (message["t"], message["first"], len(message["lines"])) == ("lines", 1, 300)
        assert await comm.receive_nothing(timeout=0.3)
        await comm.disconnect()

    async def test_batches_that_gather_while_the_hub_is_busy_reach_each_socket_as_one_message(self, async_personas,
                                                                                          monkeypatch):
        from portal import loghub

        # Every round is followed by a hold of a second: what a process busy with hundreds of sockets does for longer.
        monkeypatch.setattr(loghub, "HUB_HOLD_AFTER_SECONDS", 0)
        monkeypatch.setattr(loghub, "HUB_HOLD_FACTOR", 1e9)
        monkeypatch.setattr(loghub, "HUB_HOLD_MAX_SECONDS", 1.0)
        run, sink = await sync_to_async(make_run)(async_personas.team)
        comm = communicator(run.pk, async_personas.viewer)
        await comm.connect()
        await receive_until_status(comm)

        def batches(*texts):
            for text in texts:
                sink.write(text)
                sink.flush()  # each line its own batch, published on its own
            live.wait_published()

        await sync_to_async(batches)("one")
        assert lines_of([await comm.receive_json_from(timeout=5)]) == ([1], ["one"])
        await sync_to_async(batches)("two", "three", "\x1b[1mfour")  # while the hub holds after the first round
        message = await comm.receive_json_from(timeout=5)
        assert (message["first"], message["lines"]) == (2, ["two", "three", "\x1b[1mfour"])
        assert len(message["times"]) == 3
        assert await comm.receive_nothing(timeout=0.3)
        await comm.disconnect()


def test_consecutive_batches_merge_into_one_and_anything_else_keeps_its_place():
    def batch(first, lines, **extra):
        viewer = {"t": "lines", "first": first, "lines": lines, "times": [1000 + first + i for i in range(len(lines))],
                  **extra}
        return {"type": "log.lines", "run": 7, "first": first, "last": first + len(lines) - 1,
                "json": json.dumps(viewer)}

    status = {"type": "run.status", "run": 7}
    merged = logsink.merge_batch_messages([
        batch(1, ["a", "b"]),
        batch(3, ["STEP 1/2: FROM x"], sections=[[3, "step", "STEP 1/2: FROM x", 5]]),
        batch(4, ["long"], cut=[[4, 90000]]),
        status,
        batch(5, ["e"]),
        batch(9, ["after a gap"]),  # lines 6-8 went missing: the socket fills them from the database
    ])
    assert [m["type"] for m in merged] == ["log.lines", "run.status", "log.lines", "log.lines"]
    first = json.loads(merged[0]["json"])
    assert (merged[0]["first"], merged[0]["last"], merged[0]["run"]) == (1, 4, 7)
    assert first == {"t": "lines", "first": 1, "lines": ["a", "b", "STEP 1/2: FROM x", "long"],
                     "times": [1001, 1002, 1003, 1004], "sections": [[3, "step", "STEP 1/2: FROM x", 5]],
                     "cut": [[4, 90000]]}
    assert merged[1] is status
    assert (merged[2]["first"], merged[2]["last"], merged[3]["first"]) == (5, 5, 9)
    assert merged[2]["json"] == batch(5, ["e"])["json"]  # a batch alone is handed on as the worker serialised it


class TestArchivedLogs:
    async def test_an_archived_log_is_sent_from_object_storage_as_it_was(self, async_personas, settings, tmp_path):
        settings.MEDIA_ROOT = str(tmp_path / "media")

        def archived():
            run, sink = make_run(async_personas.team, lines=1200)
            sink.close()
            services.run_finish(run, status=RunStatus.SUCCEEDED, log_lines=sink.last_seq)
            assert logarchive.archive(Run.objects.get(pk=run.pk)) is not None
            assert not LogChunk.objects.filter(run=run).exists()
            return run

        run = await sync_to_async(archived)()
        comm = communicator(run.pk, async_personas.viewer, after=100)
        assert (await comm.connect())[0]
        seqs, texts = lines_of(await receive_until_status(comm))
        assert seqs == list(range(101, 1201)) and texts[0] == "line 101" and texts[-1] == "line 1200"
        await comm.disconnect()
