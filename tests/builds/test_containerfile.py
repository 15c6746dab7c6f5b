"""Containerfile parsing and validation on the real-world corpus (read from ../shared/corpus, never copied) and on the
BuildKit rules it must follow: continuations, heredocs, ARG before FROM, multi-stage builds."""

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builds import starters
from builds.containerfile import parse
from builds.containerfile_checks import final_base_image, validate_text
from tests.helpers import CORPUS

CONTAINERFILES = sorted(CORPUS.glob("containerfile-*"))
# SOURCES.md marks these as not buildable as they are (placeholders) or malformed; every other one is buildable.
NOT_BUILDABLE = {"21", "23", "35", "36"}


def number(path):
    return path.name.split("-")[1]


def report_for(name_part):
    path = next(p for p in CONTAINERFILES if name_part in p.name)
    return validate_text(path.read_bytes())


def codes(report, level=None):
    return {i.code for i in report.issues if level is None or i.level == level}


def test_the_corpus_is_there():
    assert len(CONTAINERFILES) >= 25, f"expected the Containerfile corpus under {CORPUS}"


@pytest.mark.parametrize("path", [p for p in CONTAINERFILES if number(p) not in NOT_BUILDABLE], ids=lambda p: p.name)
def test_every_buildable_corpus_containerfile_validates_without_errors(path):
    report = validate_text(path.read_bytes())
    assert not report.errors, [str(e) for e in report.errors]
    assert report.parsed.stages


def test_a_placeholder_base_is_an_error():
    report = report_for("21-docs")
    assert "placeholder-from" in codes(report, "error")
    assert any("<bootc base image>" in str(e) for e in report.errors)
    # ...and the heredoc body (a systemd unit) is not read as instructions.
    assert "unknown-instruction" not in codes(report)
    assert "secret-in-arg" in codes(report, "warning")  # ARG activation_key=


def test_placeholders_in_a_multistage_heredoc_file_are_errors_not_parse_noise():
    report = report_for("23-docs")
    errors = [e for e in report.errors if e.code == "placeholder-from"]
    assert {e.line for e in errors} == {2, 12}
    assert "unknown-instruction" not in codes(report)


def test_a_missing_run_keyword_is_an_unknown_instruction_with_a_suggestion():
    report = report_for("35-MALFORMED")
    [error] = [e for e in report.errors if e.code == "unknown-instruction"]
    assert error.line == 7 and "RUN rpm-ostree install bootc" in error.message
    assert "unknown-base" in codes(report)  # quay.io/centos/centos is not a bootc base
    assert "latest-base" in codes(report)


def test_a_midline_backslash_and_an_exec_form_with_a_space_are_flagged():
    report = report_for("36-TRICKY")
    warnings = {i.code: i for i in report.warnings}
    assert warnings["midline-backslash"].line == 3
    assert warnings["exec-form-space"].line == 49 and '["/usr/bin/env", "bash"]' in warnings["exec-form-space"].message
    assert "ostree-container-commit" in warnings


def test_dnf_install_without_yes_is_flagged():
    report = report_for("25-ublue")
    lines = {i.line for i in report.warnings if i.code == "install-without-yes"}
    assert lines == {10, 15}


def test_an_undeclared_variable_in_a_label_is_flagged():
    report = report_for("17-ai-amd")
    assert any(i.code == "undeclared-variable" and "IMAGE_VERSION_ID" in i.message for i in report.warnings)


def test_trailing_space_after_a_continuation_backslash_still_continues():
    report = report_for("17-ai-amd")
    run = next(i for i in report.parsed.instructions if "mv /etc/selinux /etc/selinux.tmp" in i.args)
    assert "dnf install -y" in run.args and "mv /etc/selinux.tmp /etc/selinux" in run.args


def test_comment_lines_inside_a_continued_run_are_dropped():
    report = report_for("16-ai-nvidia")
    assert not report.errors
    for instruction in report.parsed.instructions:
        assert "\n#" not in instruction.args


def test_arg_before_from_resolves_the_base():
    report = report_for("16-ai-nvidia")
    assert [s.base_resolved for s in report.parsed.stages] == [
        "quay.io/ai-lab/nvidia-builder:latest", "quay.io/centos-bootc/centos-bootc:stream9"]
    assert final_base_image(next(p for p in CONTAINERFILES if "16-ai" in p.name).read_text()) == \
        "quay.io/centos-bootc/centos-bootc:stream9"


def test_a_sealed_multistage_build_follows_stage_names_to_its_root():
    report = report_for("07-rhel-sealed")
    assert len(report.parsed.stages) == 8
    heredocs = [h.name for i in report.parsed.instructions for h in i.heredocs]
    assert heredocs.count("EORUN") == 5 and "EOF" in heredocs
    assert "no-lint" not in codes(report)  # it lints the final tree from another stage with --rootfs
    assert "needs-secret" in codes(report)


def test_no_bootc_lint_and_an_unknown_base_are_warnings():
    assert "no-lint" in codes(report_for("01-rhel-azure"), "warning")
    assert "unknown-base" in codes(report_for("27-debian"), "warning")
    assert "unknown-base" not in codes(report_for("24-ublue"))


# --- BuildKit rules --------------------------------------------------------------------------------------------------


def test_heredocs_several_per_line_quoted_and_chomped():
    text = "FROM x:1\nCOPY <<A /a <<-'B' /b\none\nA\n\t\ttwo\n\tB\nRUN echo done\n"
    parsed = parse(text)
    copy = parsed.instructions[1]
    assert [(h.name, h.body, h.quoted, h.chomp) for h in copy.heredocs] == [("A", "one", False, False),
                                                                           ("B", "two", True, True)]
    assert parsed.instructions[2].keyword == "RUN" and parsed.instructions[2].line == 7


def test_an_unterminated_heredoc_is_an_error():
    report = validate_text("FROM x:1\nRUN <<EOF\necho hi\n")
    assert codes(report, "error") == {"unterminated-heredoc"}


def test_the_escape_directive_changes_the_continuation_character():
    parsed = parse("# escape=`\nFROM x:1\nRUN echo a `\n  b\n")
    assert parsed.instructions[1].args == "echo a   b"


def test_errors_block_and_warnings_do_not():
    assert codes(validate_text(b"\x00\x01binary"), "error") == {"not-text"}
    assert codes(validate_text(b"FROM x\n\xff\xfe"), "error") == {"not-text"}
    assert codes(validate_text("FROM x:1\n" + "#" * (1024 * 1024)), "error") == {"too-large"}
    assert codes(validate_text("RUN true\n"), "error") >= {"no-from", "before-from"}
    assert codes(validate_text("   \n"), "error") == {"no-from"}
    assert codes(validate_text("FROM x:1\nRUN --privileged true\n"), "error") == {"unknown-flag"}
    assert codes(validate_text("FROM ${NOPE}\n"), "error") == {"undefined-from-arg"}
    assert not validate_text("ARG B=quay.io/fedora/fedora-bootc:42\nFROM ${B}\nRUN bootc container lint\n").issues


def test_build_args_given_to_the_definition_resolve_from():
    report = validate_text("ARG BASE\nFROM ${BASE}\nRUN bootc container lint\n",
                           build_args={"BASE": "quay.io/centos-bootc/centos-bootc:stream10"})
    assert not report.issues


@pytest.mark.parametrize("name", ["DB_PASSWORD", "api_key", "GITHUB_TOKEN", "client_secret", "REGISTRY_AUTH"])
def test_secret_looking_names_are_flagged(name):
    assert "secret-in-arg" in codes(validate_text(f"FROM quay.io/fedora/fedora-bootc:42\nARG {name}=x\n"))


@pytest.mark.parametrize("name", ["SSHPUBKEY", "SSH_PUBLIC_KEY", "VERSION", "KEYMAP", "TOKEN_URL"])
def test_ordinary_names_are_not_flagged(name):
    assert "secret-in-arg" not in codes(validate_text(f"FROM quay.io/fedora/fedora-bootc:42\nENV {name}=x\n"))


def test_dockerfile_parse_reads_heredoc_bodies_as_instructions_which_is_why_we_parse_ourselves():
    """The comparison behind our own parser: Red Hat's dockerfile-parse on the corpus file with a COPY heredoc."""
    from dockerfile_parse import DockerfileParser

    path = next(p for p in CONTAINERFILES if "21-docs" in p.name)
    theirs = {item["instruction"] for item in DockerfileParser(fileobj=path.open("rb")).structure}
    assert "[UNIT]" in theirs and "EOT" in theirs  # the unit file became "instructions"
    ours = {i.keyword for i in parse(path.read_text()).instructions}
    assert ours == {"FROM", "RUN", "ARG", "COPY"}


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("FROMRUNCOPYARG <>-'\"\\\n\t#${}=:/abc1")), max_size=300))
def test_validation_never_crashes(text):
    report = validate_text(text)
    assert all(issue.level in ("error", "warning") for issue in report.issues)
    assert all(re.match(r"^[a-z-]+$", issue.code) for issue in report.issues)


@pytest.mark.django_db
def test_heredocs_are_flagged_when_a_builder_runs_a_podman_without_them(personas):
    from builds import services
    from builds.models import Builder

    Builder.objects.create(name="old", architecture="amd64", podman_version="4.3.1")
    definition = services.definition_create(team=personas.team, user=personas.developer, name="h")
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile="FROM quay.io/fedora/fedora-bootc:42\nRUN <<EOF\ntrue\nEOF\n")
    [warning] = [w for w in revision.warnings if w["code"] == "heredoc-old-podman"]
    assert warning["line"] == 2 and "old (podman 4.3.1)" in warning["message"]


# --- The tricky corpus files: what a careful reviewer says about each (SOURCES.md's notes) ----------------------------

REVIEWER_SAYS = {
    # RUN --mount=type=secret,id=creds,required=true: the portal passes no build secrets, so the step fails.
    "03-rhel-container-auth": {"needs-secret"},
    # The legacy `ostree container commit` at the end of a RUN.
    "09-centos-cloud": {"ostree-container-commit"},
    # FROM a personal repository (quay.io/sallyom/...), not a bootc base.
    "13-ai-quadlet": {"unknown-base"},
    # FROM  an internal, unreachable registry proxy (with a double space, which is fine).
    "15-rhel94-internal": {"unknown-base"},
    # ARG IMAGE_VERSION_ID without a value, used in a LABEL and a sed: both get an empty string.
    "16-ai-nvidia": {"arg-without-value"},
    # ARG SSHPUBKEY without a value, written unguarded to /usr/ssh/root.keys: an empty key file.
    "18-ai-chatbot": {"arg-without-value"},
    "20-rhel94-beta": {"arg-without-value"},
    # Arch Linux from docker.io/archlinux/archlinux:latest: not a known bootc base, and a moving tag.
    "26-arch-linux": {"unknown-base", "latest-base"},
}


@pytest.mark.parametrize("name", sorted(REVIEWER_SAYS))
def test_each_tricky_corpus_containerfile_gets_the_warnings_a_reviewer_would_give(name):
    report = report_for(name)
    assert not report.errors, [str(e) for e in report.errors]
    assert REVIEWER_SAYS[name] <= codes(report, "warning"), [str(w) for w in report.warnings]


def test_an_arg_without_a_value_names_the_line_that_uses_it():
    report = report_for("20-rhel94-beta")
    [warning] = [w for w in report.warnings if w.code == "arg-without-value"]
    assert warning.line == 5 and "ARG SSHPUBKEY" in warning.message and "RUN on line 12" in warning.message


def test_an_arg_the_definition_sets_or_a_guarded_use_is_not_flagged():
    path = next(p for p in CONTAINERFILES if "20-rhel94-beta" in p.name)
    given = validate_text(path.read_bytes(), build_args={"SSHPUBKEY": "ssh-ed25519 AAAA ops"})
    assert "arg-without-value" not in codes(given)
    # 17 tests the key with `if [ -n "${SSHPUBKEY}" ]` before writing it: deliberate.
    assert "arg-without-value" not in codes(report_for("17-ai-amd"))
    assert "arg-without-value" not in codes(validate_text("FROM x:1\nARG A\nRUN echo ${A:-none}\n"))
    assert "arg-without-value" not in codes(validate_text("ARG A=1\nFROM x:1\nARG A\nRUN echo $A\n"))
    assert "arg-without-value" not in codes(validate_text("FROM x:1\nARG TARGETARCH\nRUN echo $TARGETARCH\n"))
    assert "arg-without-value" in codes(validate_text("FROM x:1\nARG A\nRUN echo $A\n"))


# --- Templates for new definitions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("choice", [value for value, _ in starters.choices() if value])
def test_every_template_is_a_clean_bootc_containerfile(choice):
    report = validate_text(starters.render_choice(choice))
    assert not report.issues, [str(i) for i in report.issues]


def test_templates_cover_every_base_and_purpose_the_issue_asks_for():
    labels = {label for _, label in starters.choices()}
    for base in ("CentOS Stream 9", "CentOS Stream 10", "RHEL 9", "RHEL 10", "Fedora 42"):
        for purpose in ("Container host", "Edge appliance", "AI/ML stack"):
            assert f"{base}: {purpose}" in labels


# --- Saving a revision validates it with the definition's build args ------------------------------------------------


@pytest.mark.django_db
def test_a_base_given_as_the_definitions_build_arg_saves(personas):
    from builds import services

    definition = services.definition_create(team=personas.team, user=personas.developer, name="arg-base",
                                            build_args={"BASE": "quay.io/centos-bootc/centos-bootc:stream10"})
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile="ARG BASE\nFROM ${BASE}\nRUN bootc container lint\n")
    assert revision.warnings == []


@pytest.mark.parametrize("line", ["COPY --from=/var/lib/portal secrets.json /x", "COPY --from=../other / /x",
                                  "RUN --mount=type=bind,from=/etc,source=shadow,target=/s cat /s",
                                  "COPY --from=https://example.com/x.tar / /x"])
def test_copy_from_or_a_mount_from_a_path_is_an_error(line):
    report = validate_text(f"FROM quay.io/centos-bootc/centos-bootc:stream10 AS base\n{line}\n")
    [error] = [i for i in report.errors if i.code == "from-path"]
    assert error.line == 2 and "must name an earlier stage or an image" in error.message


def test_copy_from_a_stage_or_an_image_is_fine():
    report = validate_text("FROM quay.io/a/b:1 AS build\nRUN true\nFROM quay.io/centos-bootc/centos-bootc:stream10\n"
                           "COPY --from=build /x /x\nCOPY --from=0 /y /y\nCOPY --from=quay.io/tools/x:1 /z /z\n")
    assert not [i for i in report.errors if i.code == "from-path"]


def test_remote_sources_lists_what_a_build_fetches_with_args_expanded():
    from builds.fetches import remote_sources

    parsed = parse("ARG BASE=quay.io/centos-bootc/centos-bootc\nFROM ${BASE}:stream10 AS base\n"
                   "FROM base\nARG TOOLS=registry.example.com/tools:1\nCOPY --from=${TOOLS} /t /t\n"
                   "COPY --from=base /etc /etc\nRUN --mount=type=bind,from=quay.io/x/y:2,target=/m true\n"
                   "ADD https://example.com/a.tar git@github.com:o/r.git local.txt /dst/\nFROM scratch\n")
    found = [(s.line, s.instruction, s.kind, s.reference) for s in remote_sources(parsed, {"TOOLS": "r.io/t:3"})]
    assert found == [
        (2, "FROM", "image", "quay.io/centos-bootc/centos-bootc:stream10"),
        (5, "COPY --from", "image", "r.io/t:3"),
        (7, "RUN --mount", "image", "quay.io/x/y:2"),
        (8, "ADD", "url", "https://example.com/a.tar"),
        (8, "ADD", "url", "git@github.com:o/r.git"),
    ]
