"""Forms that edit a saved configuration (a preset), and import one.

A preset is edited in parts people know from bootc-image-builder's README (users with SSH keys, groups and password
hashes; minimum file system sizes; kernel arguments; the installer's kickstart) plus "other customizations" as TOML for
everything else; `split_config` and `merge_config` turn a configuration into those parts and back without losing a key.
Every problem found by `diskchecks` is shown on the field it is about.
"""

from __future__ import annotations

import copy
import re
import tomllib

from django import forms
from django.core.exceptions import ValidationError

from . import diskchecks, diskconfig
from .forms import clean_groups, clean_password_hash, clean_ssh_key, refuse

USER_KEYS = {"name", "key", "groups", "password"}


# --- Splitting a configuration into form parts, and back -------------------------------------------------------------


def _clean_text(value):
    return isinstance(value, str) and value == value.strip() and "\r" not in value


def _structured_user(user):
    """Whether the form's user row shows this entry exactly (else it stays in "other", untouched)."""
    if not isinstance(user, dict) or not set(user) <= USER_KEYS or not _clean_text(user.get("name")):
        return False
    if "key" in user and (not _clean_text(user["key"]) or diskchecks.ssh_key_problem(user["key"], strict=True)):
        return False
    password = user.get("password")
    if password is not None and not (isinstance(password, str) and password.startswith("$")):
        return False  # plain-text passwords stay in "other": the form takes hashes only
    groups = user.get("groups", [])
    return isinstance(groups, list) and all(_clean_text(g) and g and "," not in g for g in groups)


def _structured_fs(fs):
    return isinstance(fs, dict) and set(fs) == {"mountpoint", "minsize"} and all(
        _clean_text(v) and v for v in fs.values())


def split_config(config: dict) -> dict:
    """{"users", "filesystems", "kernel_append", "kickstart", "other"}: the parts the preset form edits."""
    other = copy.deepcopy(config) if isinstance(config, dict) else {}
    custom = other.get("customizations") if isinstance(other.get("customizations"), dict) else None
    parts = {"users": [], "filesystems": [], "kernel_append": "", "kickstart": "", "other": other}
    if custom is None:
        return parts
    users = custom.get("user")
    if isinstance(users, list):
        parts["users"] = [u for u in users if _structured_user(u)]
        rest = [u for u in users if not _structured_user(u)]
        if rest:
            custom["user"] = rest
        else:
            del custom["user"]
    filesystems = custom.get("filesystem")
    if isinstance(filesystems, list):
        parts["filesystems"] = [f for f in filesystems if _structured_fs(f)]
        rest = [f for f in filesystems if not _structured_fs(f)]
        if rest:
            custom["filesystem"] = rest
        else:
            del custom["filesystem"]
    kernel = custom.get("kernel")
    if isinstance(kernel, dict) and isinstance(kernel.get("append"), str) and kernel["append"].strip():
        parts["kernel_append"] = kernel.pop("append")
        if not kernel:
            del custom["kernel"]
    installer = custom.get("installer")
    if isinstance(installer, dict) and isinstance(installer.get("kickstart"), dict) and set(
            installer["kickstart"]) == {"contents"} and isinstance(installer["kickstart"]["contents"], str) and \
            installer["kickstart"]["contents"].strip() and "\r" not in installer["kickstart"]["contents"]:
        parts["kickstart"] = installer.pop("kickstart")["contents"]
        if not installer:
            del custom["installer"]
    if not custom:
        del other["customizations"]
    return parts


def merge_config(*, users, filesystems, kernel_append, kickstart_contents, other) -> dict:
    """The configuration from the form's parts (structured users and file systems come first in their lists)."""
    config = copy.deepcopy(other)
    custom = config.get("customizations")
    if custom is None:
        custom = {}
    added = {}
    if users:
        added["user"] = list(users) + list(custom.get("user") or [])
    if filesystems:
        added["filesystem"] = list(filesystems) + list(custom.get("filesystem") or [])
    if kernel_append:
        kernel = dict(custom.get("kernel") or {})
        kernel["append"] = kernel_append
        added["kernel"] = kernel
    if kickstart_contents:
        installer = dict(custom.get("installer") or {})
        installer["kickstart"] = {"contents": kickstart_contents}
        added["installer"] = installer
    if added:
        custom = {**custom, **added}
    if custom:
        config["customizations"] = custom
    return config


# --- Preset form -----------------------------------------------------------------------------------------------------


class UserForm(forms.Form):
    name = forms.CharField(max_length=32, required=False, widget=forms.TextInput(attrs={"placeholder": "e.g. ops"}))
    key = forms.CharField(label="SSH public key(s)", required=False,
                          widget=forms.Textarea(attrs={"rows": 2, "placeholder": "ssh-ed25519 AAAA... you@laptop",
                                                       "class": "font-monospace small"}),
                          help_text="One key per line: the .pub file, never the private key.")
    groups = forms.CharField(required=False, widget=forms.TextInput(attrs={"placeholder": "e.g. wheel"}),
                             help_text="Comma-separated, e.g. wheel.")
    password = forms.CharField(label="Password hash", required=False, max_length=1024,
                               widget=forms.TextInput(attrs={"placeholder": "$6$…", "class": "font-monospace small",
                                                             "autocomplete": "off"}),
                               help_text="Optional; from openssl passwd -6. Leave empty for key-only login.")

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if name and not diskconfig.NAME_RE.match(name):
            raise ValidationError("Lower-case letters, digits, _ and -, starting with a letter or _ (at most 32).")
        return name

    def clean_key(self):
        return clean_ssh_key(self.cleaned_data["key"])

    def clean_groups(self):
        return clean_groups(self.cleaned_data["groups"])

    def clean_password(self):
        return clean_password_hash(self.cleaned_data["password"])

    def clean(self):
        data = super().clean()
        if not data.get("name") and (data.get("key") or data.get("groups") or data.get("password")):
            self.add_error("name", "Give the user a name.")
        return data

    def as_config(self):
        data = self.cleaned_data
        if not data.get("name"):
            return None
        user = {"name": data["name"]}
        if data.get("password"):
            user["password"] = data["password"]
        if data.get("key"):
            user["key"] = data["key"]
        if data.get("groups"):
            user["groups"] = data["groups"]
        return user


class FilesystemForm(forms.Form):
    mountpoint = forms.CharField(label="Mount point", required=False, max_length=1024,
                                 widget=forms.TextInput(attrs={"placeholder": "e.g. / or /var/data"}))
    minsize = forms.CharField(label="Minimum size", required=False, max_length=32,
                              widget=forms.TextInput(attrs={"placeholder": "e.g. 20 GiB"}))

    def clean_minsize(self):
        value = self.cleaned_data["minsize"].strip()
        if value:
            refuse(diskchecks.size_problem(value))
        return value

    def clean(self):
        data = super().clean()
        mountpoint = (data.get("mountpoint") or "").strip()
        data["mountpoint"] = mountpoint
        if mountpoint and not data.get("minsize") and "minsize" not in self.errors:
            self.add_error("minsize", "Give a minimum size with a unit, e.g. 20 GiB.")
        if data.get("minsize") and not mountpoint:
            self.add_error("mountpoint", "Give the mount point, e.g. / or /var/data.")
        return data

    def as_config(self):
        data = self.cleaned_data
        if not data.get("mountpoint"):
            return None
        return {"mountpoint": data["mountpoint"], "minsize": data["minsize"]}


UserFormSet = forms.formset_factory(UserForm, extra=1, max_num=50, validate_max=True)
FilesystemFormSet = forms.formset_factory(FilesystemForm, extra=1, max_num=50, validate_max=True)


class PresetBaseForm(forms.Form):
    """A configuration's name and description, and its team: asked only of someone who develops in several (`teams`:
    those they may save to)."""

    team = forms.ChoiceField(required=False)
    name = forms.CharField(max_length=100)
    description = forms.CharField(max_length=300, required=False)

    def __init__(self, *args, teams=None, **kwargs):
        super().__init__(*args, **kwargs)
        teams = list(teams or [])
        if len(teams) > 1:
            self.fields["team"].choices = [(t.slug, t.name) for t in teams]
            self.fields["team"].required = True
        else:
            del self.fields["team"]
        self.teams = {t.slug: t for t in teams}

    def clean_team(self):
        slug = self.cleaned_data.get("team")
        return self.teams.get(slug) if slug else None


class PresetForm(PresetBaseForm):
    """Name, description, kernel arguments, kickstart and "other" TOML; users and file systems come in formsets."""

    kernel_append = forms.CharField(label="Kernel arguments", required=False, max_length=4096, strip=False,
                                    widget=forms.TextInput(attrs={"placeholder": "e.g. console=ttyS0"}),
                                    help_text="Appended to the kernel command line (customizations.kernel.append).")
    kickstart = forms.CharField(label="Installer kickstart", required=False, strip=False,
                                widget=forms.Textarea(attrs={"rows": 5, "class": "font-monospace small"}),
                                help_text="Installer ISO only (customizations.installer.kickstart), e.g. <code>zerombr</code>, "
                                          "<code>clearpart --all --initlabel</code>, <code>autopart --type=lvm</code>. "
                                          "bootc-image-builder adds the ostreecontainer line itself; with a kickstart, "
                                          "users go in here too (user, sshkey).")
    other = forms.CharField(label="Other customizations (TOML)", required=False,
                            widget=forms.Textarea(attrs={"rows": 6, "class": "font-monospace small"}),
                            help_text="Anything else bootc-image-builder reads, as in config.toml: "
                                      "<code>[customizations.disk]</code>, files, directories, group, fips, installer "
                                      "modules, <code>[customizations.iso]</code> labels…")

    def clean_other(self):
        text = self.cleaned_data["other"]
        if not text.strip():
            return {}
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ValidationError(f"Not valid TOML: {exc}.") from None
        return data


def preset_initial(config: dict) -> tuple[dict, list[dict], list[dict]]:
    """(form initial, user rows, file system rows) for editing a saved configuration."""
    parts = split_config(config)
    initial = {"kernel_append": parts["kernel_append"], "kickstart": parts["kickstart"],
               "other": diskconfig.render_toml(parts["other"]) if parts["other"] else ""}
    users = [{"name": u["name"], "key": u.get("key", ""), "groups": ", ".join(u.get("groups") or []),
              "password": u.get("password", "")} for u in parts["users"]]
    filesystems = [{"mountpoint": f["mountpoint"], "minsize": f["minsize"]} for f in parts["filesystems"]]
    return initial, users, filesystems


def preset_config_from(form, users, filesystems):
    """The merged configuration, or None (with errors added to the forms) when it is not valid."""
    user_rows = [f for f in users.forms if f.cleaned_data and f.as_config()]
    fs_rows = [f for f in filesystems.forms if f.cleaned_data and f.as_config()]
    config = merge_config(users=[f.as_config() for f in user_rows], filesystems=[f.as_config() for f in fs_rows],
                          kernel_append=_kept(form.cleaned_data.get("kernel_append", "")),
                          kickstart_contents=_kept(form.cleaned_data.get("kickstart", "")),
                          other=form.cleaned_data.get("other") or {})
    report = diskchecks.validate(config)
    placed = False
    for problem in report.errors:
        placed = _place_error(problem, form, user_rows, fs_rows) or placed
    return None if report.errors else (config, report)


def _kept(value):
    """A textarea's value as typed (browsers send CRLF), or "" when it holds only blanks."""
    return value.replace("\r\n", "\n") if value and value.strip() else ""


INDEXED = re.compile(r"^customizations\.(user|filesystem)\[(\d+)\]\.(\w+)")


def _place_error(problem, form, user_rows, fs_rows):
    """Put a diskconfig problem on the field it is about (a user row's key, a file system's size, ...)."""
    match = INDEXED.match(problem.path)
    if match:
        section, index, field = match.group(1), int(match.group(2)), match.group(3)
        rows = user_rows if section == "user" else fs_rows
        if index < len(rows) and field in rows[index].fields:
            rows[index].add_error(field, problem.message[0].upper() + problem.message[1:] + ".")
            return True
    if problem.path == "customizations.kernel.append":
        form.add_error("kernel_append", problem.message)
    elif problem.path.startswith("customizations.installer.kickstart"):
        form.add_error("kickstart", problem.message)
    else:
        form.add_error("other", str(problem))
    return True


class PresetImportForm(PresetBaseForm):
    file = forms.FileField(required=False, label="A config.toml or config.json file")
    text = forms.CharField(required=False, label="…or paste it",
                           widget=forms.Textarea(attrs={"rows": 10, "class": "font-monospace small",
                                                        "placeholder": "[[customizations.user]]\nname = \"ops\"\n"
                                                                       "key = \"ssh-ed25519 AAAA... ops@laptop\"\n"
                                                                       "groups = [\"wheel\"]"}))
    format = forms.ChoiceField(choices=[("", "Detect"), ("toml", "TOML"), ("json", "JSON")], required=False)

    MAX_BYTES = 512 * 1024

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        if upload:
            if upload.size > self.MAX_BYTES:
                raise ValidationError({"file": f"The file is {upload.size:,} bytes; a configuration is at most "
                                               f"{self.MAX_BYTES:,}."})
            try:
                data["text"] = upload.read().decode("utf-8")
            except UnicodeDecodeError:
                raise ValidationError({"file": "The file is not UTF-8 text."}) from None
            data["filename"] = upload.name
        else:
            data["filename"] = ""
        if not (data.get("text") or "").strip():
            raise ValidationError({"text": "Upload a file or paste a configuration."})
        return data
