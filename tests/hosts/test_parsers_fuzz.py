"""The parsers that read what people and machines send, fed arbitrary text and bytes (hypothesis): the Containerfile
checks, kickstarts, disk image configurations, `bootc status` and the runners' line splitter. Whatever the input,
each answers with its own result or its own error (a report, a list of problems, StatusUnreadable), never an uncaught
exception.

Besides random text, each parser gets its own corpus cut, spliced and sprinkled with the characters that break
parsers (quotes, backslashes, NUL, line ends of every kind, non-ASCII, surrogates escaped in JSON)."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builds.containerfile_checks import final_base_image, validate_text
from builds.diskimages import diskchecks, diskconfig, kickstart
from builds.pipeline import containerfile_for_build
from hosts.bootc import BootcStatus, StatusUnreadable, parse_status
from portal.logsink import LineSplitter
from tests.helpers import CORPUS

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# pykickstart builds its whole command table for every parse (about 0.1 s here): fewer, richer examples.
FUZZ_KICKSTART = settings(FUZZ, max_examples=40)

CONTAINERFILES = [p.read_text() for p in sorted(CORPUS.glob("containerfile-*"))]
KICKSTARTS = [p.read_text() for p in sorted(CORPUS.glob("kickstart-*"))]
CONFIGS = [(p.read_text(), p.name) for p in sorted(CORPUS.glob("bib-config-*")) if p.suffix in (".toml", ".json")]
STATUSES = [p.read_text() for p in sorted(CORPUS.glob("status-*")) if not p.name.startswith("status-human-")]

NASTY = st.sampled_from(["'", '"', "\\", "\x00", "\r", "\n", "\r\n", "\t", "\u2028", "\ufeff", "é", "😀", "`", "$",
                         "{", "}", "[", "]", "=", "#", "%", "--", "<<EOF", "\\u0000", "\\ud800", "\x1b[31m"])
ANY_TEXT = st.one_of(st.text(max_size=400), st.binary(max_size=400).map(lambda b: b.decode("latin-1")))


@st.composite
def mangled(draw, documents):
    """A corpus document cut, spliced with another, and sprinkled with nasty characters."""
    text = draw(st.sampled_from(documents))
    for _ in range(draw(st.integers(0, 4))):
        at = draw(st.integers(0, len(text)))
        action = draw(st.sampled_from(["insert", "delete", "cut", "splice"]))
        if action == "insert":
            text = text[:at] + draw(NASTY) + text[at:]
        elif action == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
        elif action == "cut":
            text = text[:at]
        else:
            other = draw(st.sampled_from(documents))
            text = text[:at] + other[draw(st.integers(0, len(other))):]
    return text


# --- Containerfiles --------------------------------------------------------------------------------------------------


def check_containerfile(data):
    report = validate_text(data)
    assert all(issue.level in ("error", "warning") and issue.message for issue in report.issues)
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    assert isinstance(final_base_image(text), str)
    built, labels = containerfile_for_build(text, {"a": "b\"$\\"})
    assert isinstance(built, str) and isinstance(labels, dict)


@FUZZ
@given(ANY_TEXT)
def test_containerfile_checks_take_any_text(text):
    check_containerfile(text)


@FUZZ
@given(st.binary(max_size=400))
def test_containerfile_checks_take_any_bytes(data):
    check_containerfile(data)


@FUZZ
@given(mangled(CONTAINERFILES))
def test_containerfile_checks_take_any_mangled_corpus_file(text):
    check_containerfile(text)


# --- Kickstarts ------------------------------------------------------------------------------------------------------


def check_kickstart(text):
    """validate() (which check_installer_contents() calls, after its own line checks) and inspect()."""
    problems = kickstart.check_installer_contents(text)
    assert all(isinstance(p, str) and p for p in problems)
    assert set(kickstart.inspect(text)) >= {"command", "url", "transport"}


@FUZZ_KICKSTART
@given(ANY_TEXT)
def test_kickstart_checks_take_any_text(text):
    check_kickstart(text)


@FUZZ_KICKSTART
@given(st.lists(st.sampled_from(["text", "rootpw", "--plaintext", "--iscrypted", "user", "--name=x", "sshkey",
                                 "ostreecontainer", "--url=quay.io/a/b:1", "bootc", "--source-imgref=x", "%post",
                                 "%end", "%packages", "%pre", "%include", "%ksappend", "autopart", "--type=lvm",
                                 "part", "/", "--grow", "reboot", "@KS@", "#"]) | NASTY, max_size=40).map(" ".join))
def test_kickstart_checks_take_any_kickstart_words(text):
    check_kickstart(text.replace(" \n ", "\n"))


@FUZZ_KICKSTART
@given(mangled(KICKSTARTS))
def test_kickstart_checks_take_any_mangled_corpus_file(text):
    check_kickstart(text)


@FUZZ_KICKSTART
@given(st.fixed_dictionaries({
    "image_ref": st.text(min_size=1, max_size=40), "track_ref": st.text(min_size=1, max_size=40),
    "username": st.text(max_size=20), "ssh_key": st.text(max_size=60), "password_hash": st.text(max_size=30),
    "groups": st.lists(st.text(max_size=8), max_size=3), "disk": st.text(max_size=12), "timezone": st.text(max_size=20),
    "lang": st.text(max_size=12), "keyboard": st.text(max_size=12), "title": st.text(max_size=30),
}))
def test_a_generated_kickstart_is_refused_or_reads_back_as_asked(fields):
    spec = kickstart.KickstartSpec(**fields)
    try:
        text = kickstart.generate(spec)
    except kickstart.KickstartProblem as problem:
        assert str(problem)
        return
    assert kickstart.validate(text)[0] == []
    assert kickstart.inspect(text)["url"] == spec.image_ref
    # Nothing a person typed starts a line of its own: every value stays on the line it was put on.
    commands = [line.split()[0] for line in text.splitlines() if line.strip() and not line.startswith("#")]
    assert set(commands) <= {"text", "lang", "keyboard", "timezone", "network", "ignoredisk", "zerombr", "clearpart",
                             "autopart", "reqpart", "part", "ostreecontainer", "rootpw", "user", "sshkey", "reboot",
                             "poweroff", "%post", "bootc", "%end"}


# --- Disk image configurations ---------------------------------------------------------------------------------------


def check_config(text, filename="", fmt=""):
    config, found_fmt, report = diskchecks.load(text, filename=filename, fmt=fmt)
    assert found_fmt in ("toml", "json", "yaml") and isinstance(config, dict)
    assert all(isinstance(p, str) and p for p in report.error_texts() + report.warning_texts())
    if report.ok:
        for types in (["qcow2"], ["anaconda-iso"], ["ami", "raw"]):
            assert all(isinstance(p, str) for p in diskchecks.check_for_types(config, types).error_texts())
        assert set(diskconfig.accepted_types(config)) <= set(diskconfig.ALL_TYPES)
        rendered, _, again = diskchecks.load(diskconfig.render_toml(config), fmt="toml")
        assert again.ok and rendered == config, "an accepted configuration must write back to the same TOML"
        assert json.loads(diskconfig.render_json(config)) == config


@FUZZ
@given(ANY_TEXT, st.sampled_from(["", "toml", "json"]))
def test_configuration_loading_takes_any_text(text, fmt):
    check_config(text, fmt=fmt)


@FUZZ
@given(st.data())
def test_configuration_loading_takes_any_mangled_corpus_file(data):
    text = data.draw(mangled([t for t, _ in CONFIGS]))
    check_config(text, fmt=data.draw(st.sampled_from(["", "toml", "json"])))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30) | NASTY,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12) | NASTY, children,
                                                                       max_size=4),
    max_leaves=25,
)
KNOWN_KEYS = st.sampled_from(["customizations", "user", "group", "kernel", "append", "name", "key", "password",
                              "groups", "filesystem", "mountpoint", "minsize", "disk", "partitions", "installer",
                              "kickstart", "contents", "iso", "fips", "files", "directories", "path", "data", "mode"])


@FUZZ
@given(st.dictionaries(KNOWN_KEYS, st.dictionaries(KNOWN_KEYS, JSON_VALUES, max_size=4) | JSON_VALUES, max_size=4))
def test_configuration_validation_takes_any_structure(config):
    check_config(json.dumps(config), fmt="json")


# --- bootc status ----------------------------------------------------------------------------------------------------


def check_status(data):
    try:
        result = parse_status(data)
    except StatusUnreadable as exc:
        assert str(exc)
        return
    assert isinstance(result, BootcStatus)


@FUZZ
@given(mangled(STATUSES))
def test_bootc_status_parsing_takes_any_mangled_corpus_document(text):
    check_status(text)


@FUZZ
@given(mangled(STATUSES).map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_bootc_status_parsing_takes_any_mangled_corpus_bytes(data):
    check_status(data)


# --- The runners' line splitter --------------------------------------------------------------------------------------

OUTPUT = st.lists(st.sampled_from([b"a", b"bc", b"\n", b"\r", b"\r\n", b"\x00", b"\xc3\xa9", b"\xc3", b"\xff",
                                   b"\xf0\x9f\x98\x80", b" "]), max_size=300).map(b"".join)


def fed(splitter, data, cuts):
    lines, start = [], 0
    for cut in sorted(cuts) + [len(data)]:
        lines += splitter.feed(data[start:cut])
        start = cut
    return lines + splitter.rest()


@FUZZ
@given(OUTPUT, st.lists(st.integers(0, 300), max_size=8))
def test_the_line_splitter_gives_the_same_lines_however_the_output_is_cut_into_reads(data, cuts):
    cuts = [c for c in cuts if c <= len(data)] + ([len(data) // 2] * 2)  # an empty read, too
    expected = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\x00", "\ufffd".encode()).split(b"\n")
    expected = [line.decode("utf-8", "replace") for line in (expected[:-1] if expected[-1] == b"" else expected)]
    assert fed(LineSplitter(max_bytes=10**6), data, cuts) == expected


@FUZZ
@given(OUTPUT, st.lists(st.integers(0, 300), max_size=8), st.integers(80, 120))
def test_no_line_out_of_the_splitter_is_longer_than_its_limit(data, cuts, limit):
    lines = fed(LineSplitter(max_bytes=limit), data * 3, [c * 3 for c in cuts if c <= len(data)])
    assert all(len(line) <= limit and "\x00" not in line for line in lines)
