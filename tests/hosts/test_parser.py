"""The bootc status parser, against every status document of the corpus, bootc's own human-readable renderings of them,
and hypothesis-made malformed, truncated and mistyped documents."""

import json
import re
from datetime import datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hosts.bootc import BootcStatus, ImageInfo, StatusUnreadable, digest_matches, parse_status
from tests.helpers import CORPUS

STATUS_FILES = sorted(p for p in CORPUS.glob("status-*") if not p.name.startswith("status-human-"))

# What each document holds: booted, staged and rollback digests (first 8 hex digits; "ostree" for a plain ostree
# deployment; None for no entry), and whether bootc manages the host. Every status-* file must be listed here.
EXPECTED = {
    "status-01-only-booted.yaml": ("47e5ed61", None, None, True),
    "status-02-staged-booted.yaml": ("736b3594", "16dc2b62", None, True),
    "status-03-staged-rollback-no-booted.yaml": (None, "16dc2b62", "736b3594", False),
    "status-04-ostree-to-bootc.yaml": ("ostree", "47e5ed61", None, False),
    "status-05-rfe-ostree-deployment.yaml": ("ostree", "ostree", None, False),
    "status-06-via-local-oci.yaml": ("47e5ed61", None, None, True),
    "status-07-booted-pinned-otherdeployments.yaml": ("47e5ed61", None, None, True),
    "status-08-booted-usroverlay.yaml": ("736b3594", None, None, True),
    "status-09-booted-cachedupdate.yaml": ("47e5ed61", None, None, True),
    "status-10-cachedupdate-no-version.yaml": ("47e5ed61", None, None, True),
    "status-11-cachedupdate-same-digest.yaml": ("47e5ed61", None, None, True),
    "status-12-staged-download-only.yaml": ("736b3594", "16dc2b62", None, True),
    "status-13-ostree-remote-signature-tag.yaml": ("b5bb9d80", None, None, True),
    "status-14-v1alpha1-orig.yaml": ("736b3594", "16dc2b62", None, True),
    "status-15-v1alpha1-nosignature.yaml": ("b5bb9d80", None, None, True),
    "status-16-v1-all-null.json": (None, None, None, False),
    "status-17-old-staged-booted-usrunlock.yaml": ("736b3594", "16dc2b62", None, True),
    "status-18-old-v1.yaml": ("b5bb9d80", None, None, True),
    "status-19-old-spec.yaml": ("736b3594", "16dc2b62", None, True),
    "status-22-insights-booted-rollback.json": ("806d7739", None, "92e47643", True),
    "status-23-insights-staged-with-cachedupdate.json": ("5398062d", "65427522", None, True),
    "status-24-insights-booted-cachedupdate-equals-staged.json": ("5398062d", "65427522", None, True),
    "status-25-insights-MALFORMED-missing-image-name.json": ("806d7739", None, None, True),
    "status-26-insights-no-booted-key.json": (None, None, "92e47643", False),
    "status-27-insights-rhelai-nonbootc-booted.json": ("ostree", "ostree", "65427522", False),
}

# status-human-NN.txt is bootc's own rendering of which document (SOURCES.md).
HUMAN_OF = {
    "status-human-01-staged-booted.txt": "status-02-staged-booted.yaml",
    "status-human-02-rfe-ostree.txt": "status-05-rfe-ostree-deployment.yaml",
    "status-human-03-ostree-to-bootc.txt": "status-04-ostree-to-bootc.yaml",
    "status-human-04-only-booted.txt": "status-01-only-booted.yaml",
    "status-human-05-via-local-oci.txt": "status-06-via-local-oci.yaml",
    "status-human-06-booted-pinned.txt": "status-07-booted-pinned-otherdeployments.yaml",
    "status-human-07-cached-update.txt": "status-09-booted-cachedupdate.yaml",
    "status-human-08-cached-update-no-version.txt": "status-10-cachedupdate-no-version.yaml",
    "status-human-09-booted-usroverlay.txt": "status-08-booted-usroverlay.yaml",
    "status-human-10-not-deployed-via-bootc.txt": "status-03-staged-rollback-no-booted.yaml",
    "status-human-11-staged-download-only.txt": "status-12-staged-download-only.yaml",
}


def _short(entry):
    if entry is None:
        return None
    if entry.image is None:
        return "ostree"
    return entry.digest.removeprefix("sha256:")[:8]


def test_every_status_document_in_the_corpus_is_listed():
    assert STATUS_FILES, f"no status documents under {CORPUS}"
    assert {p.name for p in STATUS_FILES} == set(EXPECTED)
    humans = {p.name for p in CORPUS.glob("status-human-*")}
    assert humans == set(HUMAN_OF)


@pytest.mark.parametrize("path", STATUS_FILES, ids=lambda p: p.name)
def test_each_document_parses_into_its_booted_staged_and_rollback_entries(path):
    status = parse_status(path.read_text())
    booted, staged, rollback, is_bootc = EXPECTED[path.name]
    assert (_short(status.booted), _short(status.staged), _short(status.rollback)) == (booted, staged, rollback)
    assert status.is_bootc is is_bootc
    assert status.kind == "BootcHost"
    assert status.api_version in ("org.containers.bootc/v1alpha1", "org.containers.bootc/v1")


def test_bytes_parse_like_text():
    path = CORPUS / "status-22-insights-booted-rollback.json"
    assert parse_status(path.read_bytes()) == parse_status(path.read_text())


class TestTrickyDocuments:
    def test_v1_with_every_slot_null_is_a_host_bootc_does_not_manage(self):
        status = parse_status((CORPUS / "status-16-v1-all-null.json").read_text())
        assert status.api_version == "org.containers.bootc/v1"
        assert (status.booted, status.staged, status.rollback, status.spec_image) == (None, None, None, None)
        assert not status.is_bootc and status.next_boot is None

    def test_a_yaml_custom_tag_reads_like_the_json_form(self):
        status = parse_status((CORPUS / "status-13-ostree-remote-signature-tag.yaml").read_text())
        assert status.spec_image.signature == "ostreeRemote:fedora"
        assert status.spec_image.image == "quay.io/fedora/fedora-coreos:stable"
        assert status.booted.image.image == "quay.io/otherexample/otherimage:latest"

    def test_versions_that_look_like_numbers_stay_text(self):
        status = parse_status((CORPUS / "status-18-old-v1.yaml").read_text())
        assert status.booted.version == "20231230.1"
        assert parse_status('{"kind":"BootcHost","status":{"booted":{"image":{"version":1.10,'
                            '"imageDigest":"sha256:aa"}}}}').booted.version == "1.1"  # JSON numbers: as JSON says
        yaml_doc = "kind: BootcHost\nstatus:\n  booted:\n    image:\n      version: 1.10\n      imageDigest: sha256:aa\n"
        assert parse_status(yaml_doc).booted.version == "1.10"

    def test_timestamps_stay_as_written(self):
        status = parse_status((CORPUS / "status-02-staged-booted.yaml").read_text())
        assert status.staged.image.timestamp == "2023-10-14T19:22:15.42Z"

    def test_old_documents_without_architecture_or_stateroot(self):
        status = parse_status((CORPUS / "status-19-old-spec.yaml").read_text())
        assert status.booted.image.architecture == "" and status.booted.stateroot == ""
        assert status.booted.deploy_serial == 0

    def test_a_download_only_staged_entry_is_not_what_boots_next(self):
        status = parse_status((CORPUS / "status-12-staged-download-only.yaml").read_text())
        assert status.staged.download_only
        assert status.next_boot is status.booted

    def test_a_cached_update_equal_to_the_booted_digest_is_no_update(self):
        status = parse_status((CORPUS / "status-11-cachedupdate-same-digest.yaml").read_text())
        assert status.booted.cached_update is not None and not status.booted.update_available

    def test_cached_updates_on_the_staged_entry_and_one_already_staged(self):
        both = parse_status((CORPUS / "status-23-insights-staged-with-cachedupdate.json").read_text())
        assert both.booted.cached_update.digest == both.staged.digest  # the update it found is the one staged
        assert both.staged.update_available and both.staged.cached_update.digest.startswith("sha256:3c1cea82")
        staged = parse_status((CORPUS / "status-24-insights-booted-cachedupdate-equals-staged.json").read_text())
        assert staged.booted.cached_update.digest == staged.staged.digest and staged.staged.cached_update is None
        assert staged.next_boot is staged.staged

    def test_the_malformed_insights_document_is_read_as_far_as_it_goes(self):
        status = parse_status((CORPUS / "status-25-insights-MALFORMED-missing-image-name.json").read_text())
        assert status.booted.image.image == "" and status.booted.digest.startswith("sha256:806d7739")

    def test_pinned_other_deployments(self):
        status = parse_status((CORPUS / "status-07-booted-pinned-otherdeployments.yaml").read_text())
        assert status.booted.pinned
        assert [e.digest[-2:] for e in status.other_deployments] == ["37"]
        assert status.other_deployments[0].pinned

    def test_usr_overlay_new_and_legacy_forms(self):
        assert parse_status((CORPUS / "status-08-booted-usroverlay.yaml").read_text()).usr_overlay == \
            "transient, read/write"
        assert parse_status((CORPUS / "status-17-old-staged-booted-usrunlock.yaml").read_text()).usr_overlay == \
            "read/write"

    def test_a_queued_rollback_boots_next(self):
        doc = {"kind": "BootcHost", "spec": {"bootOrder": "rollback"},
               "status": {"booted": {"image": {"imageDigest": "sha256:aa"}},
                          "rollback": {"image": {"imageDigest": "sha256:bb"}}, "rollbackQueued": True}}
        status = parse_status(json.dumps(doc))
        assert status.rollback_queued and status.next_boot.digest == "sha256:bb"

    def test_unknown_keys_are_ignored(self):
        doc = json.loads((CORPUS / "status-16-v1-all-null.json").read_text())
        doc["status"]["futureField"] = {"anything": [1, 2, 3]}
        doc["spec"]["alsoNew"] = True
        assert parse_status(json.dumps(doc)) == parse_status((CORPUS / "status-16-v1-all-null.json").read_text())


# --- bootc's own human-readable rendering as the oracle ---------------------------------------------------------------

_HEADER = re.compile(r"^[\s●]*(?P<slot>Staged|Booted|Rollback|Other) (?P<what>image|ostree)(?::\s*(?P<ref>.*))?$")
_ROW = re.compile(r"^\s*(?P<key>[A-Za-z/ ]+?):\s*(?P<value>.*)$")


def read_human(text):
    """bootc's human-readable status -> {"slots": [{slot, what, ref, Digest, Version, ...}], "not_bootc": bool}."""
    slots = []
    for line in text.splitlines():
        if not line.strip():
            continue
        header = _HEADER.match(line)
        if header:
            slots.append({"slot": header["slot"], "what": header["what"], "ref": (header["ref"] or "").strip()})
            continue
        row = _ROW.match(line)
        if row and slots:
            slots[-1][row["key"].strip()] = row["value"].strip()
    return {"slots": slots, "not_bootc": "System is not deployed via bootc." in text}


def _timestamp_seconds(value):
    return datetime.fromisoformat(value.replace("Z", "+00:00")).replace(microsecond=0)


def _entry_for(status, slot, index):
    if slot == "Other":
        return status.other_deployments[index]
    return {"Staged": status.staged, "Booted": status.booted, "Rollback": status.rollback}[slot]


@pytest.mark.parametrize("human_name", sorted(HUMAN_OF), ids=lambda n: n)
def test_the_parse_agrees_with_what_bootc_itself_prints(human_name):
    human = read_human((CORPUS / human_name).read_text())
    status = parse_status((CORPUS / HUMAN_OF[human_name]).read_text())
    if human["not_bootc"]:
        assert status.booted is None and not status.is_bootc
        return
    others = 0
    seen = set()
    for slot in human["slots"]:
        entry = _entry_for(status, slot["slot"], others)
        others += slot["slot"] == "Other"
        seen.add(slot["slot"])
        assert entry is not None, slot
        if slot["what"] == "ostree":
            assert entry.image is None and entry.ostree_checksum == slot["Commit"]
            continue
        assert entry.image.reference == slot["ref"]
        digest, _, arch = slot["Digest"].partition(" ")
        assert entry.digest == digest
        assert entry.image.architecture == arch.strip("()")
        if "Version" in slot:
            version, _, when = slot["Version"].partition(" ")
            assert entry.version == version
            if when:
                assert _timestamp_seconds(entry.image.timestamp) == _timestamp_seconds(when.strip("()"))
            else:
                assert not entry.image.timestamp
        assert entry.pinned is (slot.get("Pinned") == "yes")
        if "UpdateDigest" in slot:
            assert entry.update_available and entry.cached_update.digest == slot["UpdateDigest"]
            if slot.get("Update") == "Available":
                assert entry.cached_update.version == ""
            else:
                assert entry.cached_update.version == slot["UpdateVersion"].split(" ")[0]
        else:
            assert not entry.update_available
        if "/usr overlay" in slot:
            assert status.usr_overlay == slot["/usr overlay"]
    # Nothing bootc shows is missing, and we show nothing bootc would not.
    shown = {name for name, entry in (("Staged", status.staged), ("Booted", status.booted),
                                      ("Rollback", status.rollback)) if entry is not None}
    assert shown == seen - {"Other"}
    assert others == len(status.other_deployments)


# --- Malformed, truncated and mistyped input: StatusUnreadable or a result, never anything else -----------------------

def _outcome(text):
    try:
        return parse_status(text)
    except StatusUnreadable as exc:
        assert str(exc)
        return exc


JSON_DOCS = [p.read_text() for p in STATUS_FILES if p.suffix == ".json"]
YAML_DOCS = [p.read_text() for p in STATUS_FILES if p.suffix == ".yaml"]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(JSON_DOCS + YAML_DOCS), st.data())
def test_truncated_documents_never_crash(doc, data):
    cut = data.draw(st.integers(min_value=0, max_value=len(doc)))
    result = _outcome(doc[:cut])
    assert isinstance(result, BootcStatus | StatusUnreadable)


def test_truncated_json_is_reported_as_cut_off():
    doc = JSON_DOCS[0]
    with pytest.raises(StatusUnreadable, match="malformed or cut off"):
        parse_status(doc[: len(doc) // 2])


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from _paths(child, (*prefix, i))


def _replace(value, path, new):
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(JSON_DOCS), json_values, st.data())
def test_any_field_of_any_type_never_crashes(doc, junk, data):
    document = json.loads(doc)
    path = data.draw(st.sampled_from(list(_paths(document))))
    mutated = _replace(document, path, junk)
    result = _outcome(json.dumps(mutated))
    assert isinstance(result, BootcStatus | StatusUnreadable)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=400), st.binary(max_size=400).map(lambda b: b.decode("latin-1"))))
def test_arbitrary_text_never_crashes(text):
    result = _outcome(text)
    assert isinstance(result, BootcStatus | StatusUnreadable)
    assert not _holds_nul(result.to_dict() if isinstance(result, BootcStatus) else str(result))


def _holds_nul(value):
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_crash(raw):
    try:
        parse_status(raw)
    except StatusUnreadable:
        pass


def test_hostile_yaml_and_deep_nesting_are_unreadable_not_fatal():
    assert isinstance(_outcome("[" * 100000), StatusUnreadable)
    assert isinstance(_outcome("a: " + "[" * 5000), StatusUnreadable)
    assert isinstance(_outcome("!!python/object/apply:os.system ['true']"), StatusUnreadable)
    assert isinstance(_outcome(""), StatusUnreadable)
    assert isinstance(_outcome("System is not deployed via bootc."), StatusUnreadable)
    assert isinstance(_outcome('{"kind": "Pod"}'), StatusUnreadable)


def test_a_nul_byte_makes_the_output_unreadable_naming_where_it_is():
    doc = JSON_DOCS[0]
    line, column = 1, doc.index('"apiVersion"') + 2
    with pytest.raises(StatusUnreadable, match=f"NUL byte at line {line}, column {column}"):
        parse_status(doc.replace('"apiVersion"', '"\x00apiVersion"', 1))
    with pytest.raises(StatusUnreadable, match="NUL byte at line 2, column 1"):
        parse_status(doc.encode() + b"\n\x00")
    with pytest.raises(StatusUnreadable, match="NUL byte at line 1, column 7"):
        parse_status(YAML_DOCS[0].replace("apiVersion", "apiVer\x00sion", 1))


def test_a_nul_character_escaped_in_the_json_makes_it_unreadable_naming_the_field():
    booted = (CORPUS / "status-22-insights-booted-rollback.json").read_text()
    document = json.loads(booted)
    document["status"]["booted"]["image"]["version"] = "1.0\u0000"
    with pytest.raises(StatusUnreadable, match=r"NUL character in status\.booted\.image\.version"):
        parse_status(json.dumps(document))
    document = json.loads(booted)
    document["status"]["otherDeployments"] = [{"x\u0000": 1}]
    with pytest.raises(StatusUnreadable, match=r"NUL character in status\.otherDeployments\[0\]"):
        parse_status(json.dumps(document))


class TestDigestsPerArchitecture:
    index = {"": "sha256:index", "amd64": "sha256:amd", "arm64": "sha256:arm"}

    def test_a_host_is_compared_with_its_own_architecture(self):
        assert digest_matches(ImageInfo(digest="sha256:arm", architecture="arm64"), self.index)
        assert not digest_matches(ImageInfo(digest="sha256:amd", architecture="arm64"), self.index)

    def test_a_host_without_architecture_matches_any_of_the_tag(self):
        assert digest_matches(ImageInfo(digest="sha256:amd"), self.index)
        assert not digest_matches(ImageInfo(digest="sha256:other"), self.index)

    def test_a_single_architecture_tag(self):
        assert digest_matches(ImageInfo(digest="sha256:one", architecture="amd64"), {"": "sha256:one"})

    def test_nothing_known_is_no_match(self):
        assert not digest_matches(ImageInfo(digest="sha256:one"), {})
        assert not digest_matches(None, self.index)
