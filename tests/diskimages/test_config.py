"""Disk image configurations, against the real-world test bed (../shared/corpus/bib-config-*) and bad input.

Every corpus config that SOURCES.md marks INVALID (or rejected by current bootc-image-builder) is refused with a message
naming the field; every other one is accepted, imports into a preset, and renders back to an equivalent file (the same
configuration once the legacy {"blueprint": ...} wrapper is removed). The preset form's parts (users, file systems, kernel
arguments, kickstart, other TOML) also round-trip every accepted file.
"""

import json
import tomllib

import pytest

from builds.diskimages import diskchecks, diskconfig
from builds.diskimages import services_presets as presets
from builds.diskimages.forms_presets import merge_config, split_config
from tests.helpers import CORPUS

FILES = sorted(CORPUS.glob("bib-config-*"))
# SOURCES.md: INVALID in the name, and bib-config-13 ("treat as INVALID for current bib"). bib-config-43 is not a config
# at all but a disk.yaml partition table that bib reads from inside the image; it is refused with that explanation.
REFUSED = {
    "bib-config-13-legacy-bare-user.json": "user: unknown top-level key; did you mean customizations.user?",
    "bib-config-26-INVALID-ostree-mountpoint.json": 'customizations.filesystem[2].mountpoint: "/ostree" is not allowed',
    "bib-config-30-INVALID-json-content-in-config.toml": "bib-config-30-INVALID-json-content-in-config.toml: cannot "
                                                         "decode TOML",
    "bib-config-31-INVALID-toml-content-in-config.json": "bib-config-31-INVALID-toml-content-in-config.json: cannot "
                                                         "decode JSON",
    "bib-config-32-INVALID-unknown-keys.toml": "birds: unknown key",
    "bib-config-33-INVALID-unknown-field.json": "birds: unknown key",
    "bib-config-43-embedded-disk-yaml-aboot-partitions.yaml": "is a disk.yaml partition table",
}
ACCEPTED = [f for f in FILES if f.name not in REFUSED]


def test_the_corpus_is_where_the_tests_expect_it():
    assert len(FILES) >= 39
    assert {f.name for f in FILES if "INVALID" in f.name} <= set(REFUSED)
    assert set(REFUSED) <= {f.name for f in FILES}


def original(path):
    text = path.read_text()
    data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    if set(data) == {"blueprint"}:
        data = data["blueprint"]
    return data


@pytest.mark.parametrize("path", [f for f in FILES if f.name in REFUSED], ids=lambda p: p.name)
def test_a_config_bootc_image_builder_rejects_is_refused_naming_the_field(path):
    config, _, report = diskchecks.load(path.read_text(), filename=path.name)
    assert not report.ok
    assert any(text.startswith(REFUSED[path.name]) or REFUSED[path.name] in text for text in report.error_texts()), \
        report.error_texts()


@pytest.mark.parametrize("path", ACCEPTED, ids=lambda p: p.name)
def test_every_other_corpus_config_is_accepted_and_renders_back_to_an_equivalent_file(path):
    config, fmt, report = diskchecks.load(path.read_text(), filename=path.name)
    assert report.ok, report.error_texts()
    assert fmt == path.suffix[1:]
    assert config == original(path)
    # Rendered in its own format and in the other one, it reads back as the same configuration.
    assert json.loads(diskconfig.render_json(config)) == config
    assert tomllib.loads(diskconfig.render_toml(config)) == config
    rendered, _, again = diskchecks.load(diskconfig.render(config, fmt), filename=f"config.{fmt}")
    assert again.ok and rendered == config


@pytest.mark.parametrize("path", ACCEPTED, ids=lambda p: p.name)
def test_every_accepted_corpus_config_imports_into_a_preset(path, personas):
    preset = presets.preset_import(team=personas.team, user=personas.developer, name=path.stem,
                                      text=path.read_text(), filename=path.name)
    preset.refresh_from_db()
    assert preset.config == original(path)
    assert preset.source_format == path.suffix[1:]
    exported = diskconfig.render(preset.config, preset.source_format)
    assert diskchecks.load(exported, filename=f"config.{preset.source_format}")[0] == original(path)


@pytest.mark.parametrize("path", ACCEPTED, ids=lambda p: p.name)
def test_the_preset_form_parts_lose_nothing(path):
    config = original(path)
    parts = split_config(config)
    merged = merge_config(users=parts["users"], filesystems=parts["filesystems"], kernel_append=parts["kernel_append"],
                          kickstart_contents=parts["kickstart"], other=parts["other"])
    assert canonical(merged) == canonical(config)


def canonical(config):
    """Users and file systems compared as sets of entries: the form lists its structured rows first."""
    data = json.loads(json.dumps(config))
    custom = data.get("customizations", {})
    for key in ("user", "filesystem"):
        if key in custom:
            custom[key] = sorted(custom[key], key=lambda item: json.dumps(item, sort_keys=True))
    return data


def test_a_repositories_section_is_kept_with_a_note_as_bib_only_warns():
    config, _, report = diskchecks.load((CORPUS / "bib-config-44-WARN-repositories-unsupported.toml").read_text(),
                                        filename="config.toml")
    assert report.ok
    assert report.warning_texts() == ["customizations.repositories: not supported by bootc image types: "
                                      "bootc-image-builder ignores it (configure this in the Containerfile instead)"]


def test_the_legacy_blueprint_wrapper_is_noted():
    _, _, report = diskchecks.load((CORPUS / "bib-config-12-legacy-blueprint-kernel.json").read_text(),
                                   filename="config.json")
    assert report.ok and any(w.startswith("blueprint: the legacy") for w in report.warning_texts())


# --- Bad input, each named -------------------------------------------------------------------------------------------


def errors_of(config, **kwargs):
    if "types" in kwargs:
        return diskchecks.check_for_types(config, kwargs.pop("types"), **kwargs).error_texts()
    return diskchecks.validate(config).error_texts()


def user(**fields):
    return {"customizations": {"user": [{"name": "ops", **fields}]}}


@pytest.mark.parametrize("key, message", [
    ("ssh-ed25519", "customizations.user[0].key: not an OpenSSH public key"),
    ("AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl", "not an OpenSSH public key"),
    ("ssh-foo AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x", '"ssh-foo" is not an SSH key type'),
    ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl x", "the key is damaged"),
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE=\n-----END OPENSSH PRIVATE KEY-----",
     "this is a private key"),
])
def test_a_malformed_ssh_key_is_refused_naming_the_field(key, message):
    errors = errors_of(user(key=key))
    assert errors and errors[0].startswith("customizations.user[0].key:") and message in errors[0]


def test_several_keys_one_per_line_are_fine():
    keys = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b\n"
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl c@d\n")
    assert errors_of(user(key=keys)) == []


@pytest.mark.parametrize("password", ["$6$", "$6$onlysalt", "$9$abc$def", "$6$sa lt$hash", "$y$j9T$"])
def test_a_malformed_password_hash_is_refused_naming_the_field(password):
    assert errors_of(user(password=password)) == [
        "customizations.user[0].password: not a valid crypt hash: expected \"$id$salt$hash\" with id 1, 5, 6, y or 2b "
        "(make one with `openssl passwd -6` or `mkpasswd -m yescrypt`)"]


@pytest.mark.parametrize("password", ["$6$rounds=5000$abc$def", "$y$j9T$F5Jx5fExrKuPp53xLKQ..1$X3DX6M94c7o.9agCG9G317fhZg9S",
                                      "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW"])
def test_real_crypt_hashes_pass(password):
    assert errors_of(user(password=password)) == []


@pytest.mark.parametrize("minsize, message", [
    ("20", '"20" has no unit; write it as "20 GiB"'),
    (21474836480.5, '21474836480.5 is not a whole number of bytes'),
    (-1, "-1 is negative"),
    ("20 GB of space", "is not a size"),
    ("20 gigs", 'unknown unit "gigs"'),
])
def test_a_size_without_units_is_refused_naming_the_field(minsize, message):
    errors = errors_of({"customizations": {"filesystem": [{"mountpoint": "/", "minsize": minsize}]}})
    assert len(errors) == 1 and errors[0].startswith("customizations.filesystem[0].minsize: ") and message in errors[0]


# osbuild's blueprint parser, which bootc-image-builder uses, reads an integer minsize as bytes: its own tests decode
# `minsize = 106300440576` as 99 GiB and `minsize = 2147483648` as 2 GiB (osbuild/images,
# pkg/blueprint/disk_customizations_test.go, cases "lvm-with-int" and "btrfs-with-int", at ec6496521e7b).
@pytest.mark.parametrize("minsize, size", [(106300440576, 99 * 1024**3), (2147483648, 2 * 1024**3),
                                           ("99 GiB", 99 * 1024**3)])
def test_a_minsize_in_integer_bytes_is_accepted_as_bib_documents(minsize, size):
    assert errors_of({"customizations": {"filesystem": [{"mountpoint": "/", "minsize": minsize}]}}) == []
    assert diskchecks.size_bytes(minsize) == size


@pytest.mark.parametrize("mountpoint", ["/ostree", "/var", "/usr", "/var/home", "/var/run/x", "var/data", "/var/../etc"])
def test_mount_points_bootc_images_do_not_allow_are_refused(mountpoint):
    errors = errors_of({"customizations": {"filesystem": [{"mountpoint": mountpoint, "minsize": "1 GiB"}]}})
    assert errors and errors[0].startswith("customizations.filesystem[0].mountpoint:")


def test_unknown_keys_are_refused_wherever_they_are():
    assert errors_of({"customizations": {"user": [{"name": "ops", "shell_path": "/bin/sh"}]}}) == [
        "customizations.user[0].shell_path: unknown key (allowed here: description, expiredate, force_password_reset, "
        "gid, groups, home, key, name, password, shell, uid)"]
    assert errors_of({"customizations": {"kernal": {"append": "x"}}})[0].startswith("customizations.kernal: unknown key")


def test_a_null_from_json_is_refused_because_toml_has_none():
    assert errors_of({"customizations": {"kernel": {"append": None}}}) == [
        "customizations.kernel.append: null is not allowed; leave the key out instead"]


@pytest.mark.parametrize("types, key", [(["qcow2"], "installer"), (["ami", "raw"], "iso"),
                                        (["anaconda-iso"], "filesystem"), (["anaconda-iso"], "disk"),
                                        (["anaconda-iso", "qcow2"], "installer")])
def test_a_key_the_chosen_type_does_not_accept_is_refused_naming_key_and_type(types, key):
    sections = {
        "installer": {"modules": {"disable": ["org.fedoraproject.Anaconda.Modules.Users"]}},
        "iso": {"volume_id": "X"},
        "filesystem": [{"mountpoint": "/", "minsize": "10 GiB"}],
        "disk": {"type": "gpt"},
    }
    errors = errors_of({"customizations": {key: sections[key]}}, types=types)
    assert len(errors) == 1 and errors[0].startswith(f"customizations.{key}: ")
    assert "does not accept it" in errors[0] or "do not accept it" in errors[0]


def test_with_btrfs_only_root_and_boot_can_be_sized():
    config = {"customizations": {"filesystem": [{"mountpoint": "/", "minsize": "10 GiB"},
                                                {"mountpoint": "/var/data", "minsize": "5 GiB"}]}}
    assert errors_of(config, types=["qcow2"], rootfs="xfs") == []
    assert errors_of(config, types=["qcow2"], rootfs="btrfs") == [
        'customizations.filesystem[1].mountpoint: with a btrfs root file system only "/" and "/boot" can be sized, '
        'not "/var/data"']


def test_a_kickstart_cannot_come_with_users_nor_choose_the_source():
    errors = errors_of({"customizations": {"user": [{"name": "ops"}],
                                           "installer": {"kickstart": {"contents": "text\n"}}}})
    assert errors == ["customizations.installer.kickstart: a custom kickstart cannot be combined with "
                      "customizations.user or group: create the users in the kickstart (user, sshkey) instead"]
    errors = errors_of({"customizations": {"installer": {"kickstart": {
        "contents": "text\nostreecontainer --url quay.io/x/y:1\n"}}}})
    assert errors == ['customizations.installer.kickstart.contents: line 2: remove "ostreecontainer": '
                      "bootc-image-builder adds the installation source (ostreecontainer) itself"]
    errors = errors_of({"customizations": {"installer": {"kickstart": {"contents": "autopart --typo=lvm\n"}}}})
    assert errors and errors[0].startswith("customizations.installer.kickstart.contents: pykickstart: line 1:")


def test_an_unbalanced_quote_in_the_kickstart_is_an_error_naming_field_and_line():
    errors = errors_of({"customizations": {"installer": {"kickstart": {"contents": 'text\nrootpw "abc\n'}}}})
    assert errors == ["customizations.installer.kickstart.contents: pykickstart: line 2: a quotation mark or "
                      "backslash escape is not closed on this line"]
    config, _, report = diskchecks.load('[customizations.installer.kickstart]\ncontents = """\nrootpw "abc\n"""\n',
                                        fmt="toml")
    assert [problem.path for problem in report.errors] == ["customizations.installer.kickstart.contents"]


def test_a_nul_character_anywhere_is_refused_naming_the_field():
    assert errors_of({"customizations": {"kernel": {"append": "quiet\x00"}}}) == [
        "customizations.kernel.append: holds a NUL character (\\u0000), which no configuration file may hold"]
    assert errors_of({"customizations": {"user": [{"name\x00": "ops"}]}}) == [
        "customizations.user[0].name\ufffd: the key holds a NUL character (\\u0000), which no configuration file may hold"]
    _, _, report = diskchecks.load('{"customizations": {"kernel": {"append": "a\\u0000b"}}}', fmt="json")
    assert report.error_texts() == [
        "customizations.kernel.append: holds a NUL character (\\u0000), which no configuration file may hold"]
    _, _, report = diskchecks.load('[customizations.kernel]\nappend = "a\\u0000b"\n', fmt="toml")
    assert [problem.path for problem in report.errors] == ["customizations.kernel.append"]


def test_disk_and_filesystem_cannot_be_combined():
    assert errors_of({"customizations": {"disk": {"type": "gpt"},
                                         "filesystem": [{"mountpoint": "/", "minsize": "1 GiB"}]}})[0].startswith(
        "customizations.disk: cannot be combined with customizations.filesystem")


def test_which_types_a_configuration_fits():
    assert diskconfig.accepted_types({}) == list(diskconfig.ALL_TYPES)
    assert diskconfig.accepted_types({"customizations": {"filesystem": []}}) == list(diskconfig.DISK_TYPES)
    assert diskconfig.accepted_types({"customizations": {"installer": {}}}) == ["anaconda-iso", "bootc-installer"]
    assert diskconfig.accepted_types({"customizations": {"installer": {}, "disk": {}}}) == []
