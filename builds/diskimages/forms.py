"""Forms for disk image requests, AWS credentials, retention and kickstarts. The forms that edit a saved configuration
(a preset) are builds/diskimages/forms_presets.py. Every problem found by `diskchecks` is shown on the field it is
about."""

from __future__ import annotations

from zoneinfo import available_timezones

from django import forms
from django.core.exceptions import ValidationError

from . import diskchecks, diskconfig, kickstart
from .models import DiskImageBackend, DiskImageType, RootFilesystem

ARCH_CHOICES = [("", "Same as the image"), ("amd64", "amd64 (x86_64)"), ("arm64", "arm64 (aarch64)"),
                ("ppc64le", "ppc64le"), ("s390x", "s390x")]
TOOL_SEPARATOR = "|"  # between the tool and the image in the Tool field's values (never in an image reference)
TYPE_HELP = {
    "qcow2": "KVM, libvirt, OpenStack",
    "ami": "Amazon EC2; uploaded when you give a bucket",
    "raw": "bare metal (write it with dd), any hypervisor",
    "anaconda-iso": "Anaconda built from RPMs; bootc-image-builder only, replaced by bootc-installer",
    "bootc-installer": "the image boots as its own installer (it must contain Anaconda); built in a run of its own",
    "vmdk": "VMware vSphere",
    "vhd": "Azure, Hyper-V",
    "gce": "Google Compute Engine",
}


# --- A user of the installed system: the fields a preset's users and a kickstart share ---------------------------------


def refuse(problem: str | None) -> None:
    """A `diskchecks` problem ("not an SSH public key ...") as the field's error ("Not an SSH public key ....")."""
    if problem:
        raise ValidationError(problem[0].upper() + problem[1:] + ".")


def clean_ssh_key(value: str) -> str:
    key = value.strip()
    if key:
        refuse(diskchecks.ssh_key_problem(key, strict=True))
    return key


def clean_password_hash(value: str) -> str:
    value = value.strip()
    if value:
        refuse(diskchecks.password_problem(value, require_hash=True))
    return value


def clean_groups(value: str) -> list[str]:
    """Comma-separated group names, as a list."""
    groups = [g.strip() for g in value.split(",") if g.strip()]
    for group in groups:
        if not diskconfig.NAME_RE.match(group):
            raise ValidationError(f"\"{group}\" is not a valid group name.")
    return groups


# --- Request form ----------------------------------------------------------------------------------------------------


class BuildChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, build):
        return (f"{build.definition.team.name} / {build.definition.name} · build {build.number} · "
                f"{build.architecture or build.platform} · {build.short_digest}")


class TeamObjectChoiceField(forms.ModelChoiceField):
    def __init__(self, *args, show_team=False, **kwargs):
        self.show_team = show_team
        super().__init__(*args, **kwargs)

    def label_from_instance(self, obj):
        label = getattr(obj, "name", str(obj))
        return f"{obj.team.name} / {label}" if self.show_team else label


class ToolChoiceField(forms.ChoiceField):
    """The Tool field: values TOOL|IMAGE. A bare IMAGE (an older form, a script) is taken when some tool offers it."""

    def valid_value(self, value):
        return super().valid_value(value) or any(super(ToolChoiceField, self).valid_value(f"{tool}{TOOL_SEPARATOR}{value}")
                                                 for tool in DiskImageBackend.values)


class DiskImageRequestForm(forms.Form):
    source = forms.ChoiceField(choices=[("build", "A build"), ("stage", "What a stage holds")],
                               widget=forms.RadioSelect(attrs={"class": "form-check-input"}), initial="build")
    build = BuildChoiceField(queryset=None, required=False, empty_label="Pick a succeeded build…")
    definition = TeamObjectChoiceField(queryset=None, required=False, empty_label="Pick an image…", label="Image")
    stage = TeamObjectChoiceField(queryset=None, required=False, empty_label="Pick a stage…")
    types = forms.MultipleChoiceField(choices=DiskImageType.choices, widget=forms.CheckboxSelectMultiple,
                                      label="Image types", initial=["qcow2"])
    architecture = forms.ChoiceField(choices=ARCH_CHOICES, required=False, label="Target architecture")
    rootfs = forms.ChoiceField(choices=RootFilesystem.choices, initial="xfs", label="Root file system",
                               help_text="Fedora images need one; CentOS and RHEL use xfs.")
    preset = TeamObjectChoiceField(queryset=None, required=False, label="Configuration",
                                   empty_label="None: the builder's defaults (no users added)")
    config_text = forms.CharField(
        required=False, label="…or a configuration for this request only",
        widget=forms.Textarea(attrs={"rows": 6, "class": "font-monospace small",
                                     "placeholder": "[[customizations.user]]\nname = \"ops\"\n"
                                                    "key = \"ssh-ed25519 AAAA... ops@laptop\"\ngroups = [\"wheel\"]"}),
        help_text="TOML or JSON, as bootc-image-builder's config.toml / config.json.")
    save_as = forms.CharField(required=False, max_length=100, label="Save it as a configuration named",
                              help_text="Optional: keep the pasted configuration for the team's next requests.")
    builder_image = ToolChoiceField(
        label="Tool", help_text="osbuild's image-builder took over from bootc-image-builder, which was archived upstream "
                                "in June 2026.")
    aws_bucket = forms.CharField(required=False, max_length=63, label="S3 bucket",
                                 widget=forms.TextInput(attrs={"placeholder": "my-images"}))
    aws_region = forms.CharField(required=False, max_length=32, label="Region",
                                 widget=forms.TextInput(attrs={"placeholder": "eu-west-1"}))
    aws_ami_name = forms.CharField(required=False, max_length=128, label="AMI name",
                                   widget=forms.TextInput(attrs={"placeholder": "web-os build 12"}))
    aws_credential = TeamObjectChoiceField(queryset=None, required=False, label="AWS credentials",
                                           empty_label="Pick stored credentials…")

    def __init__(self, *args, builds, definitions, stages, presets, credentials, builder_choices, show_team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["build"].queryset = builds
        self.fields["definition"].queryset = definitions
        self.fields["stage"].queryset = stages
        self.fields["preset"].queryset = presets
        self.fields["aws_credential"].queryset = credentials
        for name in ("definition", "stage", "preset", "aws_credential"):
            self.fields[name].show_team = show_team
        tools = dict(DiskImageBackend.choices) | {DiskImageBackend.BIB: "bootc-image-builder (archived upstream)"}
        groups: dict[str, list] = {}
        for tool, image in builder_choices:
            groups.setdefault(tools[tool], []).append((f"{tool}{TOOL_SEPARATOR}{image}",
                                                       f"{DiskImageBackend(tool).label}: {image}"))
        self.fields["builder_image"].choices = list(groups.items())
        self.fields["types"].choices = [(value, f"{label}") for value, label in DiskImageType.choices]

    def clean_builder_image(self):
        """(tool, image): the choice's value is TOOL|IMAGE; a bare image (an older form, a script) names no tool."""
        tool, separator, image = self.cleaned_data["builder_image"].partition(TOOL_SEPARATOR)
        return (tool, image) if separator else ("", tool)

    def clean_config_text(self):
        text = self.cleaned_data["config_text"]
        if not text.strip():
            return None
        try:
            config, fmt, notes = diskconfig.parse(text)
        except diskconfig.ConfigError as exc:
            raise ValidationError(str(exc)) from None
        report = diskchecks.validate(config)
        if report.errors:
            raise ValidationError(report.error_texts())
        self.config_format = fmt
        self.config_notes = notes
        return config

    def clean(self):
        data = super().clean()
        if data.get("source") == "stage":
            if not data.get("definition"):
                self.add_error("definition", "Pick the image whose stage digest to convert.")
            if not data.get("stage"):
                self.add_error("stage", "Pick the stage.")
            data["build"] = None
        elif not data.get("build"):
            self.add_error("build", "Pick a succeeded build.")
        if data.get("preset") and data.get("config_text"):
            self.add_error("config_text", "Pick a saved configuration or paste one, not both.")
        if data.get("save_as") and not data.get("config_text"):
            self.add_error("save_as", "Only a pasted configuration can be saved under a name.")
        return data


ERROR_FIELDS = {"config": "config_text", "build": "build", "stage": "stage", "types": "types",
                "architecture": "architecture", "rootfs": "rootfs", "preset": "preset", "builder_image": "builder_image",
                "aws_bucket": "aws_bucket", "aws_region": "aws_region", "aws_ami_name": "aws_ami_name",
                "aws_credential": "aws_credential"}


def add_service_errors(form, exc: ValidationError, *, config_field="config_text"):
    """Show a service's ValidationError on the form's fields (a message dict) or at the top."""
    if hasattr(exc, "error_dict"):
        for key, errors in exc.message_dict.items():
            field = config_field if key == "config" else ERROR_FIELDS.get(key)
            if field == "config_text" and config_field == "config_text" and not form.cleaned_data.get("config_text"):
                field = "preset" if form.cleaned_data.get("preset") else "config_text"
            for error in errors:
                form.add_error(field if field in form.fields else None, error)
    else:
        for error in exc.messages:
            form.add_error(None, error)


# --- Settings, credentials ------------------------------------------------------------------------------------------


class RetentionForm(forms.Form):
    keep_days = forms.IntegerField(min_value=0, max_value=3650, label="Delete files older than (days)",
                                   help_text="0 keeps them until someone deletes them.")
    keep_latest = forms.IntegerField(min_value=0, max_value=100, label="Always keep each image's newest conversions",
                                     help_text="However old they are.")


class CloudCredentialForm(forms.Form):
    name = forms.CharField(max_length=100, initial="aws")
    access_key_id = forms.CharField(max_length=128, label="Access key ID",
                                    widget=forms.TextInput(attrs={"placeholder": "AKIA…", "autocomplete": "off"}))
    secret_access_key = forms.CharField(label="Secret access key",
                                        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}))
    session_token = forms.CharField(required=False, label="Session token (temporary credentials only)",
                                    widget=forms.PasswordInput(attrs={"autocomplete": "off"}))


# --- Kickstart -------------------------------------------------------------------------------------------------------


class KickstartForm(forms.Form):
    source = forms.ChoiceField(choices=[("stage", "A stage's tag (follows promotions)"),
                                        ("build", "One build's digest (pinned)")],
                               widget=forms.RadioSelect(attrs={"class": "form-check-input"}), initial="stage")
    definition = TeamObjectChoiceField(queryset=None, label="Image", empty_label="Pick an image…")
    stage = TeamObjectChoiceField(queryset=None, required=False, empty_label="Pick a stage…",
                                  help_text="With a stage the installer pulls repository:stage; with a build, its digest.")
    build = BuildChoiceField(queryset=None, required=False, empty_label="Pick a succeeded build…")
    track = TeamObjectChoiceField(queryset=None, required=False, label="Afterwards the host follows",
                                  empty_label="The stage above",
                                  help_text="The %post runs bootc switch --mutate-in-place to this stage's tag, so "
                                            "bootc upgrade picks up what is promoted to it.")
    transport = forms.ChoiceField(choices=[(t, t) for t in kickstart.TRANSPORTS], initial="registry")
    skip_signature_verification = forms.BooleanField(
        required=False, label="Skip signature verification",
        help_text="Adds --no-signature-verification. Only for registries without signed images; otherwise the "
                  "installed host enforces the container signature policy.")
    username = forms.CharField(max_length=32, initial="ops", label="User")
    ssh_key = forms.CharField(label="SSH public key", widget=forms.Textarea(attrs={"rows": 2,
                                                                                   "class": "font-monospace small"}))
    password_hash = forms.CharField(required=False, label="Password hash (optional)", max_length=1024,
                                    widget=forms.TextInput(attrs={"placeholder": "$6$…", "autocomplete": "off"}))
    groups = forms.CharField(required=False, initial="wheel", help_text="Comma-separated.")
    layout = forms.ChoiceField(choices=list(kickstart.LAYOUTS.items()), initial="lvm", label="Disk layout")
    filesystem = forms.ChoiceField(label="File system", choices=[(f, f) for f in kickstart.FILESYSTEMS], initial="xfs")
    disk = forms.CharField(required=False, max_length=200, label="Install only to disk",
                           help_text="e.g. vda or nvme0n1; empty: Anaconda picks. Every disk used is wiped.")
    timezone = forms.CharField(max_length=64, initial="Etc/UTC")

    def __init__(self, *args, definitions, stages, builds, show_team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["definition"].queryset = definitions
        self.fields["stage"].queryset = stages
        self.fields["track"].queryset = stages
        self.fields["build"].queryset = builds
        for name in ("definition", "stage", "track"):
            self.fields[name].show_team = show_team

    def clean_username(self):
        name = self.cleaned_data["username"].strip()
        if not diskconfig.NAME_RE.match(name) or name == "root":
            raise ValidationError("Lower-case letters, digits, _ and -, starting with a letter (not root: root stays "
                                  "locked).")
        return name

    def clean_ssh_key(self):
        return clean_ssh_key(self.cleaned_data["ssh_key"])

    def clean_password_hash(self):
        return clean_password_hash(self.cleaned_data["password_hash"])

    def clean_groups(self):
        return clean_groups(self.cleaned_data["groups"])

    def clean_timezone(self):
        value = self.cleaned_data["timezone"].strip()
        if value not in available_timezones():
            raise ValidationError(f"{value!r} is not a time zone name (e.g. Etc/UTC, Europe/Paris).")
        return value

    def clean_disk(self):
        value = self.cleaned_data["disk"].strip()
        if value and not kickstart.DISK_NAME_RE.match(value):
            raise ValidationError("A disk name such as vda, nvme0n1 or /dev/disk/by-id/….")
        return value

    def clean(self):
        data = super().clean()
        definition = data.get("definition")
        if data.get("source") == "build":
            build = data.get("build")
            if not build:
                self.add_error("build", "Pick the build to install.")
            elif definition and build.definition_id != definition.pk:
                self.add_error("build", f"That build is not of {definition.name}.")
            if not data.get("track"):
                self.add_error("track", "Pick the stage whose tag the installed host follows.")
        elif not data.get("stage"):
            self.add_error("stage", "Pick the stage to install from.")
        for name in ("stage", "track"):
            stage = data.get(name)
            if stage and definition and stage.team_id != definition.team_id:
                self.add_error(name, f"{stage.name} is a stage of another team.")
        return data


class BootTestPlanForm(forms.Form):
    marker = forms.CharField(required=False, max_length=200, label="Boot marker",
                             help_text="A regular expression a console line matches once the image has booted, with "
                                       "one repetition at a time (no (a+)+). Empty: the portal's (a login prompt or "
                                       "greenboot's boot-complete).")
    boot_seconds = forms.IntegerField(required=False, min_value=5, max_value=3600, label="Boot deadline (s)",
                                      help_text="From the VM's start to the marker. Empty: the portal's.")
    soak_seconds = forms.IntegerField(required=False, min_value=0, max_value=24 * 3600, label="Soak time (s)",
                                      help_text="The VM stays up this long after the marker and the checks run again. "
                                                "Empty: the portal's.")
    ssh_checks = forms.BooleanField(required=False, label="Check over SSH",
                                    help_text="Log in as root with a key made for the run: bootc status must report the "
                                              "digest under test, systemctl is-system-running must say running.")
    test_script = forms.CharField(required=False, max_length=20000, label="Test script",
                                  widget=forms.Textarea(attrs={"rows": 6, "class": "font-monospace", "spellcheck": "false"}),
                                  help_text="Shell, run as root in the VM over SSH after the checks; exit 0 passes.")
