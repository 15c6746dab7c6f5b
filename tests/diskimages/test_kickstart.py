"""Kickstarts: generated for a stage's tag or a digest, validated with pykickstart (Anaconda's own parser), read back;
the corpus kickstart-* files are the test bed for reading and validating existing ones."""

import shlex

import pytest

from builds.diskimages import kickstart
from builds.diskimages.kickstart import KickstartSpec, generate, inspect, validate
from tests.helpers import CORPUS

REPO = "registry.example.com/platform/web-os"
DIGEST = "sha256:47e5ed613a970b6574bfa954ab25bb6e85656552899aa518b5961d9645102b38"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl ops@example"


def parsed(text):
    from pykickstart.parser import KickstartParser
    from pykickstart.version import makeVersion

    parser = KickstartParser(makeVersion())
    parser.readKickstartFromString(text)
    return parser.handler


def test_a_kickstart_for_a_stage_tag_installs_from_it_and_follows_it():
    text = generate(KickstartSpec(image_ref=f"{REPO}:prod", track_ref=f"{REPO}:prod", username="ops", ssh_key=KEY))
    assert validate(text) == ([], [])
    handler = parsed(text)
    assert handler.ostreecontainer.url == f"{REPO}:prod"
    assert handler.ostreecontainer.noSignatureVerification is False
    assert handler.user.userList[0].name == "ops" and handler.user.userList[0].groups == ["wheel"]
    assert handler.sshkey.sshUserList[0].key == KEY
    assert handler.rootpw.lock is True
    assert handler.autopart.autopart and handler.autopart.type is not None
    assert handler.clearpart.initAll and handler.zerombr.zerombr
    post = handler.scripts[-1]
    assert post.errorOnFail
    assert post.script.strip() == (f"bootc switch --mutate-in-place --transport registry --enforce-container-sigpolicy "
                                   f"{REPO}:prod")


def test_a_kickstart_for_a_digest_pins_it_and_the_post_repoints_at_the_stage_tag():
    text = generate(KickstartSpec(image_ref=f"{REPO}@{DIGEST}", track_ref=f"{REPO}:test", username="ops", ssh_key=KEY,
                                  layout="root", filesystem="ext4", disk="nvme0n1"))
    handler = parsed(text)
    assert handler.ostreecontainer.url == f"{REPO}@{DIGEST}"
    assert "reqpart --add-boot" in text and "part / --grow --fstype=ext4" in text
    assert handler.ignoredisk.onlyuse == ["nvme0n1"] and handler.clearpart.drives == ["nvme0n1"]
    assert f"--transport registry --enforce-container-sigpolicy {REPO}:test" in handler.scripts[-1].script


def test_signature_verification_is_skipped_only_when_asked():
    kept = generate(KickstartSpec(image_ref=f"{REPO}:prod", track_ref=f"{REPO}:prod"))
    assert "--no-signature-verification" not in kept and parsed(kept).ostreecontainer.noSignatureVerification is False
    skipped = generate(KickstartSpec(image_ref=f"{REPO}:prod", track_ref=f"{REPO}:prod",
                                     skip_signature_verification=True))
    assert parsed(skipped).ostreecontainer.noSignatureVerification is True
    assert "--enforce-container-sigpolicy" not in skipped


@pytest.mark.parametrize("transport, ref", [("oci", "/run/install/repo/container"),
                                            ("containers-storage", f"{REPO}:prod"),
                                            ("oci-archive", "/mnt/image.tar")])
def test_other_transports(transport, ref):
    text = generate(KickstartSpec(image_ref=ref, track_ref=f"{REPO}:prod", transport=transport))
    assert parsed(text).ostreecontainer.transport == transport
    assert inspect(text)["transport"] == transport


def test_values_with_shell_and_kickstart_metacharacters_reach_anaconda_literally():
    key = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl o\'brien "laptop" #1 $(id)'
    password = "$6$rounds=5000$abc$def/ghi.jkl"
    text = generate(KickstartSpec(image_ref=f"{REPO}:prod", track_ref=f"{REPO}:prod", username="ops", ssh_key=key,
                                  password_hash=password, groups=["wheel", "adm"]))
    handler = parsed(text)
    assert handler.sshkey.sshUserList[0].key == key
    assert handler.user.userList[0].password == password and handler.user.userList[0].isCrypted
    assert handler.user.userList[0].groups == ["wheel", "adm"]


def test_a_bad_layout_or_transport_is_refused():
    with pytest.raises(kickstart.KickstartProblem, match="transport 'docker'"):
        generate(KickstartSpec(image_ref="x", track_ref="y", transport="docker"))
    with pytest.raises(kickstart.KickstartProblem, match="not a disk name"):
        generate(KickstartSpec(image_ref="x", track_ref="y", disk="sda; rm -rf /"))


def test_pykickstart_errors_come_with_their_line():
    errors, _ = validate("text\nautopart --typo\n")
    assert errors and errors[0].startswith("line 2:")


@pytest.mark.parametrize("text, line", [
    ('rootpw "abc', 1),
    ('text\nrootpw --plaintext "abc\nreboot\n', 2),
    ("lang en_US\nuser --name='ops\n", 2),
    ('text\n%post\necho "a script may hold any quote\n%end\nrootpw "abc\n', 5),
    ("text\n%packages\n%end 'x\n", 3),
    ("rootpw abc\\", 1),
])
def test_an_unbalanced_quote_is_an_error_on_its_line(text, line):
    errors, _ = validate(text)
    assert errors == [f"line {line}: a quotation mark or backslash escape is not closed on this line"], errors
    assert kickstart.check_installer_contents(text) == [f"pykickstart: {errors[0]}"]
    assert inspect(text)["command"] == ""


@pytest.mark.parametrize("text, line", [("''\ntext\n", 1), ("text\n'' # comment\n", 2), ('text\n"" rootpw x\n', 2)])
def test_a_line_starting_with_empty_quotes_is_an_error_on_its_line(text, line):
    assert validate(text)[0] == [f"line {line}: the line starts with empty quotes, where a command must be"]


@pytest.mark.parametrize("field, value", [
    ("lang", "en_US\nrootpw --plaintext x"), ("track_ref", "r/x:prod\x1e%end\x1erootpw --plaintext x\x1e%post\x1e"),
    ("username", "ops\u2028"), ("ssh_key", "ssh-ed25519 AAAA ops\x85rootpw x"), ("image_ref", "q/a:1\r"),
])
def test_a_value_with_a_line_break_or_control_character_is_refused_naming_it(field, value):
    spec = KickstartSpec(**{"image_ref": "q/a:1", "track_ref": "q/a:prod", "username": "ops", field: value})
    with pytest.raises(kickstart.KickstartProblem, match="holds a line break or another control character"):
        generate(spec)


def test_the_title_stays_one_comment_line():
    text = generate(KickstartSpec(image_ref="q/a:1", track_ref="q/a:prod",
                                  title="web\nrootpw --plaintext x\x1erootpw --plaintext y"))
    assert text.splitlines()[0] == "# web rootpw --plaintext x rootpw --plaintext y"
    assert "\nrootpw --plaintext" not in text


# --- The corpus: real kickstarts and Anaconda's own test templates ---------------------------------------------------

EXPECTED = {
    "kickstart-01-ostreecontainer-no-sigverify.ks": ("ostreecontainer", "quay.io/sallyom/centos-bootc:rhel94", False),
    "kickstart-02-bootc-cmd-stateroot-autopart.ks": ("bootc", "@KSTEST_OSTREECONTAINER_URL@", True),
    "kickstart-03-bootc-cmd-luks.ks": ("bootc", "@KSTEST_OSTREECONTAINER_URL@", True),
    "kickstart-04-bootc-cmd-reqpart-root.ks": ("bootc", "@KSTEST_OSTREECONTAINER_URL@", True),
    "kickstart-05-ostreecontainer-remote-stateroot.ks": ("ostreecontainer", "@KSTEST_OSTREECONTAINER_URL@", False),
    "kickstart-06-ostreecontainer-silverblue-transport.ks": ("ostreecontainer",
                                                             "quay.io/fedora/fedora-silverblue:rawhide", False),
    "kickstart-07-ostreecontainer-leavebootorder-rootpw.ks": ("ostreecontainer", "@KSTEST_OSTREECONTAINER_URL@", False),
    "kickstart-08-centos-bootc-example-tab-separator.ks": ("ostreecontainer", "quay.io/centos-bootc/fedora-bootc:eln",
                                                           False),
    "kickstart-09-centos-bootc-early-bootupd-hacks.ks": ("ostreecontainer", "quay.io/centos-boot/fedora-tier-1:eln",
                                                         False),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_corpus_kickstart_validates_and_says_where_it_installs_from(name):
    text = (CORPUS / name).read_text()
    errors, _ = validate(text)
    assert errors == []
    found = inspect(text)
    command, url, verifies = EXPECTED[name]
    assert (found["command"], found["url"], found["signature_verification"]) == (command, url, verifies)
    assert found["template"] == ("@KSTEST" in text or "%ksappend" in text)


def test_the_corpus_is_complete():
    assert {p.name for p in CORPUS.glob("kickstart-*")} == set(EXPECTED)


def test_the_tab_separated_options_of_kickstart_08_are_understood():
    text = (CORPUS / "kickstart-08-centos-bootc-example-tab-separator.ks").read_text()
    assert "\t--no-signature-verification" in text
    assert inspect(text)["signature_verification"] is False


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_corpus_kickstart_is_refused_as_installer_contents_of_a_bib_config_because_bib_adds_the_source(name):
    problems = kickstart.check_installer_contents((CORPUS / name).read_text())
    command = EXPECTED[name][0]
    assert any(f'remove "{command}"' in p for p in problems), problems


def test_the_post_of_a_generated_kickstart_is_a_plain_command_line():
    text = generate(KickstartSpec(image_ref=f"{REPO}:prod", track_ref=f"{REPO}:prod"))
    post = parsed(text).scripts[-1].script.strip()
    assert shlex.split(post) == ["bootc", "switch", "--mutate-in-place", "--transport", "registry",
                                 "--enforce-container-sigpolicy", f"{REPO}:prod"]
