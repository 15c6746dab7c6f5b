"""Diffs of a host's changed /etc files against the image's version: secrets in common formats are masked before
anything is kept, binary and large files are named and not diffed, and files that hold only secrets are never read."""

import pytest

from hosts import etcdiff

SECRETS = {
    "key = value": ("db_password = hunter2-Xy9\n", "hunter2-Xy9"),
    "yaml": ("  api_key: 8f14e45fceea167a5a36dedd4bea2543\n", "8f14e45fceea167a5a36dedd4bea2543"),
    "shell export": ('export AWS_SECRET_ACCESS_KEY="wJalrXUtnFEMI/K7MDENG/bPxRfiCY"\n', "wJalrXUtnFEMI"),
    "ini, spaces": ("secret     s3cr3t-value\n", "s3cr3t-value"),
    "wifi psk": ("psk=correcthorsebattery\n", "correcthorsebattery"),
    "URL password": ("url = https://deploy:Tr0ub4dor@git.example.com/repo.git\n", "Tr0ub4dor"),
    "bearer": ("Authorization: Bearer abcdef0123456789abcdef\n", "abcdef0123456789abcdef"),
    "crypt hash": ("root:$6$rounds=5000$saltsalt$Hm2P1yN0ZCn8mUDrz8Bq4a:19000:0:99999:7:::\n", "Hm2P1yN0ZCn8"),
    "AWS access key": ("aws_access = AKIAIOSFODNN7EXAMPLE\n", "AKIAIOSFODNN7EXAMPLE"),
    "GitHub token": ("GH=ghp_0123456789abcdefghijABCDEFGHIJ0123456789\n", "ghp_0123456789"),
    "JWT": ("header eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N\n", "eyJhbGciOiJIUzI1NiJ9"),
    "private key": ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n"
                    "-----END OPENSSH PRIVATE KEY-----\n", "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"),
}


@pytest.mark.parametrize("name", SECRETS)
def test_secrets_in_common_formats_are_masked(name):
    text, secret = SECRETS[name]
    masked, count = etcdiff.mask_secrets("# a comment\n" + text)
    assert secret not in masked and etcdiff.MASK in masked and count >= 1, masked
    assert masked.startswith("# a comment\n")


def test_settings_that_only_look_like_secrets_stay_readable():
    text = "PasswordAuthentication no\nPermitRootLogin prohibit-password\ntoken_lifetime = 3600\nserver ntp.example.com\n"
    assert etcdiff.mask_secrets(text) == (text, 0)


def side(text):
    data = text.encode() if isinstance(text, str) else text
    return ("file", len(data), data)


def test_a_modified_file_is_a_unified_diff_with_the_secret_masked_on_both_sides():
    entry = etcdiff.file_entry("/etc/app.conf", "M", side("port = 80\npassword = old-one\n"),
                               side("port = 8080\npassword = new-one\n"))
    assert entry["status"] == "diff" and entry["masked"] == 2
    assert "-port = 80" in entry["diff"] and "+port = 8080" in entry["diff"]
    assert "old-one" not in entry["diff"] and "new-one" not in entry["diff"]
    assert entry["diff"].startswith("--- image /etc/app.conf\n+++ host /etc/app.conf")


def test_a_change_only_in_a_secret_says_so_without_showing_it():
    entry = etcdiff.file_entry("/etc/app.conf", "M", side("password = a\n"), side("password = b\n"))
    assert entry["diff"] == "" and entry["only_masked_differ"]


def test_added_and_deleted_files_diff_against_nothing():
    added = etcdiff.file_entry("/etc/sysctl.d/90-tuning.conf", "A", None, side("vm.swappiness = 10\n"))
    assert "--- /dev/null" in added["diff"] and "+vm.swappiness = 10" in added["diff"]
    deleted = etcdiff.file_entry("/etc/motd", "D", side("Welcome\n"), None)
    assert "+++ /dev/null" in deleted["diff"] and "-Welcome" in deleted["diff"]


def test_binary_large_linked_and_directory_paths_are_named_not_diffed():
    binary = etcdiff.file_entry("/etc/pki/x.der", "M", side(b"\x30\x82\x00\x01"), side(b"\x30\x82\x00\x02"))
    assert binary == {"status": "skipped", "why": "a binary file (4 bytes): listed, not diffed"}
    large = etcdiff.file_entry("/etc/big.conf", "M", side("a\n"), ("file", 10_000_000, b"b" * 65537))
    assert large["status"] == "skipped" and "too large to diff (10,000,000 bytes" in large["why"]
    link = etcdiff.file_entry("/etc/localtime", "M", side("x"), etcdiff.parse_side(b"#link /usr/share/zoneinfo/UTC\n"))
    assert link["why"] == "a symbolic link to /usr/share/zoneinfo/UTC"
    folder = etcdiff.file_entry("/etc/foo.d", "A", None, etcdiff.parse_side(b"#dir\n"))
    assert folder["why"] == "a directory"


def test_files_that_hold_only_secrets_are_never_read_and_machine_files_are_marked():
    changes = [["M", "/etc/shadow"], ["M", "/etc/ssh/ssh_host_ed25519_key"], ["A", "/etc/pki/tls/private/web.key"],
               ["M", "/etc/ssh/ssh_host_ed25519_key.pub"], ["M", "/etc/chrony.conf"], ["M", "/etc/machine-id"]]
    assert etcdiff.plan(changes) == [["M", "/etc/ssh/ssh_host_ed25519_key.pub"], ["M", "/etc/chrony.conf"],
                                     ["M", "/etc/machine-id"]]
    assert etcdiff.file_entry("/etc/machine-id", "M", side("a\n"), side("b\n"))["machine_specific"]


def test_a_long_diff_is_cut_and_says_so():
    entry = etcdiff.file_entry("/etc/x", "A", None, side("".join(f"line {i}\n" for i in range(2000))))
    assert entry["truncated"] and len(entry["diff"].splitlines()) == etcdiff.DIFF_LINES_MAX
