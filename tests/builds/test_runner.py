"""The runner's own guarantees, with real processes: argument lists, deadlines, the whole process tree killed; and the
failure summaries podman's output leads to. (A builder's capacity is its workers' concurrency: test_builder_queues.py.)"""

import os
import time

import pytest

from builds import podman, services
from builds.runner import CommandFailed, LocalRunner, OutputTooLarge, TimedOut, Watch, process_tree
from portal.logsink import LineSplitter


def watch(deadline=None):
    return Watch(run=None, sink=None, deadline=deadline)


def test_arguments_reach_the_program_literally():
    value = "a b; rm -rf / $(id) `id` 'q' \"d\" | cat > /tmp/x"
    assert LocalRunner().run(["printf", "%s", value], watch=watch(), capture=True).stdout == value


def test_a_failing_command_keeps_its_last_lines():
    with pytest.raises(CommandFailed) as failure:
        LocalRunner().run(["sh", "-c", "for i in 1 2 3; do echo line-$i; done; exit 3"], watch=watch(), tail=2)
    assert failure.value.returncode == 3 and failure.value.output_tail == ["line-2", "line-3"]


def cut(line, limit):
    """`line` as the splitter gives it out when it is longer than `limit` bytes."""
    mark = f" [… cut: the line is longer than {limit:,} bytes; the rest of it is not kept]"
    return line[:limit - len(mark)] + mark


class TestLineSplitting:
    def test_lines_end_at_newlines_and_carriage_returns_even_across_reads(self):
        splitter = LineSplitter(max_bytes=100)
        assert splitter.feed(b"one\ntw") == ["one"]
        assert splitter.feed(b"o\r") == ["two"]
        assert splitter.feed(b"\nthree\r\nfour") == ["three"]  # \r then \n in the next read is one line end
        assert splitter.rest() == ["four"] and splitter.rest() == []

    def test_carriage_returns_can_stay_inside_lines_for_the_sink_to_rewrite(self):
        splitter = LineSplitter(carriage_return_ends_line=False)
        assert splitter.feed(b"10%\r50%\r") == [] and splitter.feed(b"done\r\nnext") == ["10%\r50%\rdone"]
        assert splitter.rest() == ["next"]

    def test_nul_and_bytes_that_are_not_utf8_read_as_replacement_characters(self):
        assert LineSplitter().feed(b"a\x00b \xff\n") == ["a\ufffdb \ufffd"]

    def test_a_line_longer_than_the_limit_is_cut_once_and_marked_and_nothing_more_of_it_is_held(self):
        splitter = LineSplitter(max_bytes=1000)
        out = []
        for _ in range(128):  # 8 MiB without a newline
            out += splitter.feed(b"a" * 65536)
            assert splitter.buffered <= 1000
        out += splitter.feed(b"aaa\nnext line\n")
        assert out == [cut("a" * 1000, 1000), "next line"] and len(out[0]) == 1000

    def test_a_cut_never_splits_a_character(self):
        room = 100 - len(cut("", 100))  # bytes of the line kept before the mark
        [line] = LineSplitter(max_bytes=100).feed(("a" * (room - 1) + "é" * 50 + "\n").encode())  # é is 2 bytes
        assert line == "a" * (room - 1) + cut("", 100)

    def test_a_cut_line_ending_exactly_at_the_limit_is_not_marked(self):
        assert LineSplitter(max_bytes=100).feed(b"a" * 100 + b"\n" + b"a" * 101 + b"\n") == ["a" * 100,
                                                                                              cut("a" * 101, 100)]

    def test_a_command_printing_megabytes_without_a_newline_logs_one_cut_line(self, settings):
        settings.RUN_LOG_LINE_MAX_CHARS = 4096
        seen = []

        class Sink:
            def write(self, line):
                seen.append(line)

            def poll(self):
                pass

        LocalRunner().run(["sh", "-c", "head -c 20000000 /dev/zero | tr '\\0' a; echo; echo done"],
                          watch=Watch(run=None, sink=Sink(), deadline=None), echo=False)
        assert seen == [cut("a" * 4096, 4096), "done"]


class TestCapturedOutput:
    def test_captured_output_beyond_the_cap_stops_the_command_with_the_reason(self, settings):
        settings.RUNNER_CAPTURE_MAX_BYTES = 1024 * 1024
        with pytest.raises(OutputTooLarge) as failure:
            LocalRunner().run(["yes", "an endless line"], watch=watch(), capture=True)
        assert "printed more than 1 MiB" in str(failure.value) and "RUNNER_CAPTURE_MAX_BYTES" in str(failure.value)
        assert isinstance(failure.value, CommandFailed)

    def test_output_below_the_cap_is_returned_whole(self, settings):
        settings.RUNNER_CAPTURE_MAX_BYTES = 1024 * 1024
        result = LocalRunner().run(["sh", "-c", "seq 1 100000"], watch=watch(), capture=True)
        assert result.stdout.split("\n") == [str(i) for i in range(1, 100001)]


def test_the_deadline_kills_the_whole_process_tree():
    started = time.monotonic()
    marker = f"sleep-tree-{os.getpid()}"
    with pytest.raises(TimedOut):
        LocalRunner().run(["sh", "-c", f"(exec -a {marker} sleep 297) & (sh -c 'sleep 296') & wait"],
                          watch=watch(deadline=time.monotonic() + 1))
    assert time.monotonic() - started < 5
    time.sleep(0.2)
    leftovers = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = open(f"/proc/{pid}/cmdline", "rb").read()
            except OSError:
                continue
            if cmdline.startswith(marker.encode()) or cmdline == b"sleep\x00296\x00":
                leftovers.append(pid)
    assert leftovers == []


def test_process_tree_finds_grandchildren():
    import subprocess

    process = subprocess.Popen(["sh", "-c", "sh -c 'sleep 5' & wait"])
    try:
        time.sleep(0.3)
        assert len(process_tree(process.pid)) >= 3
    finally:
        from builds.runner import kill_tree

        kill_tree(process.pid)
        process.wait()


@pytest.mark.parametrize("lines,words", [
    (["STEP 1/2: FROM quay.io/x/y:1", "Error: creating build container: quay.io/x/y:1: image not known"],
     "Image not found"),
    (["STEP 2/3: RUN dnf -y install httpd", "exec container process `/bin/sh`: Exec format error"], "Architecture mismatch"),
    (["STEP 2/3: RUN dnf -y install httpd", "Error: write /var/tmp/x: no space left on device"], "Disk full"),
    (["STEP 2/3: RUN dnf -y install httpd", "Curl error (6): Couldn't resolve host name",
      "Error: Failed to download metadata for repo 'baseos'"], "No network inside the build"),
    (["STEP 3/4: COPY app.conf /etc/", 'checking on sources under "/tmp/c": copier: stat: "/app.conf": no such file '
                                       "or directory"], "COPY/ADD source missing"),
])
def test_failure_hints_name_the_common_causes(lines, words):
    summary = podman.summarize_failure(lines)
    assert words in summary.hint
    assert summary.step == lines[0]


def test_a_refused_push_gets_the_registry_hint_and_no_step():
    summary = podman.summarize_failure(
        ["Copying blob sha256:abc", "Error: writing blob: initiating layer upload: unauthorized: authentication "
                                    "required"], pushing=True)
    assert "refused the push" in summary.hint and summary.step == ""
    assert "unauthorized" in summary.error_lines


@pytest.mark.django_db
def test_the_dashboard_counts_definitions_and_builds(client_for, personas):
    definition = services.definition_create(team=personas.team, user=personas.developer, name="counted")
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile="FROM quay.io/fedora/fedora-bootc:42\n")
    services.build_start(revision=revision, user=personas.developer)
    from builds.models import dashboard_counts
    from portal.models import Team

    counts = dashboard_counts(personas.developer, Team.objects.filter(pk=personas.team.pk))
    assert counts["definitions"] == 1 and counts["builds"] == 1
    assert dashboard_counts(personas.outsider, Team.objects.filter(pk=personas.other_team.pk))["builds"] == 0
