"""Containerfile checks that experts flag at once, each built from a real file or report whose source is named.

The corpus files under the steering repository's shared/corpus/ are read from there (never copied); the other cases
quote the lines that matter from the public report they come from.
"""

import pytest
from django.test import override_settings

from builds.containerfile_checks import is_known_base, validate_text
from tests.helpers import CORPUS

BASE = "FROM quay.io/centos-bootc/centos-bootc:stream10\n"
LINT = "RUN bootc container lint\n"


def codes(report):
    return [issue.code for issue in report.issues]


# --- RUN cmd && <<EOF with no command for the heredoc ---------------------------------------------------------------
# konflux-ci/build-definitions issue 1200 ("RUN <<EOF without an interpreter and cachi2"): a tool rewrote
# `RUN <<EOF` into `RUN . /cachi2/cachi2.env && <<EOF`, "weirdly not a syntax error, but a no-op"; the maintainers'
# fix is `&& /bin/sh <<EOF`.
KONFLUX_REWRITE = BASE + "RUN . /cachi2/cachi2.env && <<EOF\nmkdir -p /etc/foo\ncp -aR /src/foo /etc/foo\nEOF\n" + LINT
KONFLUX_FIXED = BASE + "RUN . /cachi2/cachi2.env && /bin/sh <<EOF\nmkdir -p /etc/foo\ncp -aR /src/foo /etc/foo\nEOF\n" + LINT


def test_a_heredoc_after_an_operator_with_no_command_is_a_warning_that_it_never_runs():
    report = validate_text(KONFLUX_REWRITE)
    [issue] = [i for i in report.issues if i.code == "heredoc-no-command"]
    assert issue.level == "warning" and issue.line == 2
    assert "never runs" in issue.message and "/bin/sh <<EOF" in issue.message


def test_the_maintainers_fix_and_plain_heredocs_are_not_flagged():
    assert "heredoc-no-command" not in codes(validate_text(KONFLUX_FIXED))
    # The sealed RHEL example runs `RUN python3 - <<'EOF'` and `RUN --mount=... <<EORUN` (redhat-cop/rhel-bootc-examples).
    sealed = (CORPUS / "containerfile-07-rhel-sealed-composefs-uki-multistage.Containerfile").read_text()
    assert "heredoc-no-command" not in codes(validate_text(sealed))
    # The reordered form puts the command after the heredoc: `cd /r && <<EOF bash` runs bash.
    assert "heredoc-no-command" not in codes(validate_text(BASE + "RUN cd /tmp && <<EOF bash\necho hi\nEOF\n" + LINT))


# --- A shebang inside a RUN <<EOF body --------------------------------------------------------------------------------
# containers/buildah issue 5251 ("Shebangs don't work in heredoc RUN instructions", fixed by pull request 5255): the
# reporter's Containerfile, whose python body podman ran with /bin/sh.
BUILDAH_5251 = "FROM python:3.11-slim-bullseye\nRUN <<EOF\n#!/usr/bin/env python\nprint('hello world')\nEOF\n"


def test_a_shebang_in_a_run_heredoc_warns_that_older_builders_use_sh():
    report = validate_text(BUILDAH_5251)
    [issue] = [i for i in report.issues if i.code == "heredoc-shebang"]
    assert issue.level == "warning" and issue.line == 2
    assert "/bin/sh" in issue.message and "RUN /usr/bin/env python <<EOF" in issue.message


def test_a_heredoc_that_names_its_interpreter_or_uses_sh_is_not_flagged():
    named = "FROM python:3.11-slim-bullseye\nRUN python3 <<EOF\nprint('hello world')\nEOF\n"
    sh = "FROM python:3.11-slim-bullseye\nRUN <<EOF\n#!/bin/sh\necho hi\nEOF\n"
    assert "heredoc-shebang" not in codes(validate_text(named))
    assert "heredoc-shebang" not in codes(validate_text(sh))


def test_the_corpus_heredoc_files_get_no_heredoc_warnings():
    for name in ("containerfile-21-docs-management-client-heredoc.Containerfile",
                 "containerfile-23-docs-composefs-sealed-uki-placeholders.Containerfile"):
        found = codes(validate_text((CORPUS / name).read_text()))
        assert "heredoc-shebang" not in found and "heredoc-no-command" not in found, name


# --- Known bootc bases, matched by pattern ----------------------------------------------------------------------------
# openshift/microshift packaging/imagemode/README.md: the image mode builds' default base is
# registry.redhat.io/rhel9-eus/rhel-9.4-bootc:9.4, a RHEL EUS stream.
MICROSHIFT_EUS = "FROM registry.redhat.io/rhel9-eus/rhel-9.4-bootc:9.4\n" + LINT


def test_a_rhel_eus_stream_is_a_known_bootc_base():
    assert is_known_base("registry.redhat.io/rhel9-eus/rhel-9.4-bootc:9.4")
    assert "unknown-base" not in codes(validate_text(MICROSHIFT_EUS))


@pytest.mark.parametrize("image", ["registry.redhat.io/rhel9/rhel-bootc:9.6", "registry.redhat.io/rhel10/rhel-bootc:10.0",
                                   "quay.io/centos-bootc/centos-bootc:stream10", "quay.io/fedora/fedora-bootc:42"])
def test_the_usual_bases_stay_known(image):
    assert is_known_base(image)


@pytest.mark.parametrize("image", ["registry.redhat.io/ubi9/ubi:9.4", "registry.redhat.io/rhel9/rhel-bootc-evil/x:1",
                                   "registry.access.redhat.com/ubi9/ubi", "docker.io/library/fedora:42"])
def test_a_pattern_does_not_cross_path_segments_or_match_application_images(image):
    assert not is_known_base(image)


@override_settings(BUILD_KNOWN_BASES=["registry.example.com/os/*-bootc"])
def test_the_list_is_a_setting_with_patterns():
    assert is_known_base("registry.example.com/os/acme-bootc:1")
    assert not is_known_base("quay.io/fedora/fedora-bootc:42")
    assert "unknown-base" in codes(validate_text(MICROSHIFT_EUS))


# --- A required ARG that the Containerfile checks itself ---------------------------------------------------------------
# packit/packit-service `files/docker/Dockerfile` as pull request 767 changed it ("Dockerfiles will fail if build arg is
# missing", https://github.com/packit/packit-service/pull/767, merged with the reviewer's wording): `ARG SOURCE_BRANCH`
# with no default, then a RUN that stops the build with `exit 1` when it is empty. The text is the pull request's hunk.
PACKIT_DOCKERFILE = r"""FROM fedora:31

ARG SOURCE_BRANCH
RUN  if [[ -z $SOURCE_BRANCH ]]; then \
echo -e "\nMissing SOURCE_BRANCH build argument! Please add \
\"--build-arg SOURCE_BRANCH=<val>\" to the build command to specify it!\n\
This is the branch used when installing other Packit projects (e.g. ogr, packit).\n" && exit 1;\
fi
"""


def test_an_arg_the_containerfile_checks_with_exit_1_is_not_warned_as_empty():
    assert "arg-without-value" not in codes(validate_text(PACKIT_DOCKERFILE))
    # The same check written as a comparison with "" (no -n/-z test to see) is recognised by its exit too.
    compared = (PACKIT_DOCKERFILE.split("RUN  if")[0]
                + 'RUN if [ "${SOURCE_BRANCH}" = "" ]; then echo "SOURCE_BRANCH is required"; exit 1; fi\n')
    assert "arg-without-value" not in codes(validate_text(compared))


def test_an_arg_used_unchecked_is_still_warned():
    # The same ARG used with no check in front of it (as the file was before the pull request added one).
    unchecked = (PACKIT_DOCKERFILE.split("RUN  if")[0]
                 + "RUN ansible-playbook -e source_branch=$SOURCE_BRANCH install.yaml\n")
    [issue] = [i for i in validate_text(unchecked).issues if i.code == "arg-without-value"]
    assert issue.line == 3 and "SOURCE_BRANCH" in issue.message
