"""Forms for definitions, revisions, builders, registry credentials, API tokens and webhooks (crispy, Bootstrap 5)."""

import re

import django_filters
from crispy_forms.helper import FormHelper
from crispy_forms.layout import Submit
from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Q

from portal import egress
from portal.models import Team

from . import starters
from .buildcontext import SAFE_PATH_RE, validate_context
from .git import validate_git_url
from .models import (
    BUILD_ARG_NAME_RE,
    PLATFORM_RE,
    Builder,
    BuilderKind,
    BuildStatus,
    ContextKind,
    ImageDefinition,
    RegistryCredential,
    Schedule,
    validate_repository,
    validate_repository_name,
)


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files in one input; the form reads them with `self.files.getlist(name)`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        if isinstance(data, (list, tuple)):
            return [super(MultipleFileField, self).clean(d, initial) for d in data]
        return super().clean(data, initial)


PLATFORM_CHOICES = [(p, p) for p in ("linux/amd64", "linux/arm64", "linux/ppc64le", "linux/s390x")]


def parse_build_args(text):
    """NAME=value per line (blank lines and # comments ignored) -> dict; the value is kept exactly, spaces included."""
    args = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, eq, value = line.partition("=")
        name = name.strip()
        if not eq or not BUILD_ARG_NAME_RE.match(name):
            raise ValidationError(f"Line {number}: write NAME=value (NAME: letters, digits and _).")
        if name in args:
            raise ValidationError(f"Line {number}: {name} is given twice.")
        args[name] = value
    return args


def format_build_args(args):
    return "\n".join(f"{k}={v}" for k, v in (args or {}).items())


class DefinitionForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.none(), empty_label=None)
    name = forms.CharField(max_length=64, validators=[validate_repository_name],
                           help_text="A repository name: lower case letters, digits and . _ - (e.g. web-os).")
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    repository = forms.CharField(required=False, max_length=255,
                                 help_text="Where builds are pushed. Leave empty for the portal's registry: "
                                           "REGISTRY/team/name.")
    platforms = forms.MultipleChoiceField(choices=PLATFORM_CHOICES, initial=["linux/amd64"],
                                          widget=forms.CheckboxSelectMultiple,
                                          help_text="Each platform is built on a builder of that architecture.")
    build_args = forms.CharField(required=False, label="Build args", widget=forms.Textarea(attrs={"rows": 3,
                                 "class": "font-monospace", "placeholder": "VERSION=1.2\nSSHPUBKEY=ssh-ed25519 AAAA..."}),
                                 help_text="One NAME=value per line, passed to podman exactly as written.")
    schedule = forms.ChoiceField(choices=Schedule.choices, required=False,
                                 help_text="Rebuild the current revision regularly to pick up base image updates.")
    timeout_minutes = forms.IntegerField(min_value=1, max_value=24 * 60, initial=60, label="Time limit (minutes)")
    starter = forms.ChoiceField(choices=starters.choices(), required=False, label="Start from",
                                help_text="Fills in the first revision's Containerfile; you can edit it before saving.")

    def __init__(self, *args, teams, instance=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.instance = instance
        self.fields["team"].queryset = teams
        self.fields["repository"].widget.attrs["placeholder"] = f"{settings.REGISTRY_URL}/<team>/<name>"
        if instance is not None:
            del self.fields["team"], self.fields["name"], self.fields["starter"]
            self.initial.update({
                "description": instance.description, "repository": instance.repository,
                "platforms": instance.platforms, "build_args": format_build_args(instance.build_args),
                "schedule": instance.schedule, "timeout_minutes": instance.timeout_minutes,
            })
        elif teams.count() == 1:
            self.fields["team"].initial = teams.first()
        self.helper = FormHelper()
        self.helper.form_tag = False

    def clean_repository(self):
        value = self.cleaned_data["repository"].strip()
        if value:
            validate_repository(value)
        return value

    def clean_platforms(self):
        value = self.cleaned_data["platforms"]
        for platform in value:
            if not PLATFORM_RE.match(platform):
                raise ValidationError(f"{platform} is not a platform podman builds for.")
        return value

    def clean_build_args(self):
        return parse_build_args(self.cleaned_data["build_args"])

    def clean(self):
        data = super().clean()
        team, name = data.get("team"), data.get("name")
        if self.instance is None and team and name and ImageDefinition.objects.filter(team=team, name=name).exists():
            self.add_error("name", f"{team} already has an image called {name}.")
        return data


class RevisionForm(forms.Form):
    containerfile = forms.CharField(required=False, strip=False, widget=forms.Textarea(
        attrs={"rows": 22, "class": "font-monospace containerfile-editor", "spellcheck": "false"}),
        help_text="Checked when you save: errors block the save, warnings are shown.")
    upload = forms.FileField(required=False, label="…or upload a Containerfile",
                             help_text="Replaces the text above. At most 1 MiB of text.")
    message = forms.CharField(max_length=500, required=False, label="What changed",
                              widget=forms.TextInput(attrs={"placeholder": "e.g. add cloud-init"}))
    context_kind = forms.ChoiceField(choices=ContextKind.choices, initial=ContextKind.NONE, widget=forms.RadioSelect,
                                     label="Build context")
    git_url = forms.CharField(required=False, max_length=500, label="Repository URL")
    git_ref = forms.CharField(required=False, max_length=200, label="Branch, tag or commit", initial="main")
    git_subdir = forms.CharField(required=False, max_length=300, label="Sub-directory")
    keep_files = forms.MultipleChoiceField(required=False, widget=forms.CheckboxSelectMultiple,
                                           label="Keep these files from the current revision")
    files = MultipleFileField(required=False, label="Add files")
    files_dir = forms.CharField(required=False, max_length=200, label="…into the directory",
                                widget=forms.TextInput(attrs={"placeholder": "e.g. etc/ssh (empty: the top)"}))
    new_file_path = forms.CharField(required=False, max_length=255, label="New text file: path",
                                    widget=forms.TextInput(attrs={"placeholder": "etc/motd"}))
    new_file_content = forms.CharField(required=False, strip=False, label="Content",
                                       widget=forms.Textarea(attrs={"rows": 4, "class": "font-monospace"}))

    def __init__(self, *args, previous=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.previous = previous
        previous_files = list(previous.context_files.all()) if previous is not None else []
        self.previous_files = {f.path: f for f in previous_files}
        self.fields["keep_files"].choices = [(f.path, f"{f.path} ({f.size:,} bytes)") for f in previous_files]
        if not previous_files:
            del self.fields["keep_files"]
        self.helper = FormHelper()
        self.helper.form_tag = False

    def clean_upload(self):
        upload = self.cleaned_data.get("upload")
        if upload and upload.size > 1024 * 1024:
            raise ValidationError(f"That file is {upload.size:,} bytes; a Containerfile may be at most 1 MiB.")
        return upload

    def clean(self):
        data = super().clean()
        upload = data.get("upload")
        if upload:
            data["containerfile_data"] = upload.read()
        else:
            data["containerfile_data"] = data.get("containerfile") or ""
        if not data["containerfile_data"] or (isinstance(data["containerfile_data"], str)
                                              and not data["containerfile_data"].strip()):
            self.add_error("containerfile", "Write the Containerfile here, or upload one.")
        kind = data.get("context_kind") or ContextKind.NONE
        files: dict[str, bytes] = {}
        if kind == ContextKind.FILES:
            for path in data.get("keep_files") or []:
                if path in self.previous_files:
                    files[path] = bytes(self.previous_files[path].content)
            directory = (data.get("files_dir") or "").strip().strip("/")
            if directory and (not SAFE_PATH_RE.match(directory) or ".." in directory.split("/")):
                self.add_error("files_dir", "Use a relative directory without '..'.")
            for upload_file in self.files.getlist("files") if hasattr(self.files, "getlist") else []:
                name = upload_file.name.rsplit("/", 1)[-1]
                path = f"{directory}/{name}" if directory else name
                if upload_file.size > settings.BUILD_CONTEXT_MAX_BYTES:
                    self.add_error("files", f"{name} is larger than the context limit.")
                    continue
                files[path] = upload_file.read()
            new_path = (data.get("new_file_path") or "").strip().strip("/")
            if new_path:
                files[new_path] = (data.get("new_file_content") or "").replace("\r\n", "\n").encode()
            elif data.get("new_file_content"):
                self.add_error("new_file_path", "Give the new file a path.")
        elif kind == ContextKind.GIT:
            problem = validate_git_url((data.get("git_url") or "").strip())
            if problem:
                self.add_error("git_url", problem)
        for error in validate_context(kind=kind, git_url=(data.get("git_url") or "").strip(),
                                      git_ref=(data.get("git_ref") or "").strip(),
                                      git_subdir=(data.get("git_subdir") or "").strip(), files=files):
            if kind != ContextKind.GIT or "URL" not in error:
                self.add_error(None, error)
        data["context_files"] = files
        return data


GIB = 1024 ** 3


class BuilderForm(forms.ModelForm):
    private_key = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 4, "class": "font-monospace",
                                  "placeholder": "-----BEGIN OPENSSH PRIVATE KEY-----"}),
                                  help_text="Stored encrypted. Leave empty to keep the current key.")
    storage_budget_gib = forms.DecimalField(
        required=False, min_value=0, max_digits=9, decimal_places=1, label="Disk budget (GiB)",
        help_text="Above this, older build results leave the builder's podman store (each definition's newest build "
                  "stays: it is the next rebuild's cache). Empty: never prune.")

    class Meta:
        model = Builder
        fields = ["name", "kind", "architecture", "capacity", "enabled", "host", "port", "username", "private_key",
                  "host_key", "podman_root", "podman_runroot", "work_dir"]
        widgets = {"host_key": forms.TextInput(attrs={"class": "font-monospace", "placeholder": "ssh-ed25519 AAAA..."})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial["private_key"] = ""
        if self.instance.storage_budget_bytes is not None:
            self.initial["storage_budget_gib"] = round(self.instance.storage_budget_bytes / GIB, 1)
        self.helper = FormHelper()
        self.helper.add_input(Submit("submit", "Save builder"))

    def clean_architecture(self):
        value = self.cleaned_data["architecture"].strip()
        if not re.match(r"^(amd64|arm64|ppc64le|s390x|386|arm|riscv64)$", value):
            raise ValidationError("Use an OCI architecture name: amd64, arm64, ppc64le, s390x, 386, arm or riscv64.")
        return value

    def clean(self):
        data = super().clean()
        if data.get("kind") == BuilderKind.SSH:
            for field in ("host", "username", "host_key"):
                if not data.get(field):
                    self.add_error(field, "Needed for a builder reached over SSH.")
            if not data.get("private_key") and not (self.instance.pk and self.instance.private_key):
                self.add_error("private_key", "Needed for a builder reached over SSH.")
            if data.get("host_key") and len(data["host_key"].split()) < 2:
                self.add_error("host_key", "Paste the key as 'type base64', e.g. from ssh-keyscan.")
        return data

    def save(self, commit=True):
        instance = super().save(commit=False)
        if not self.cleaned_data.get("private_key") and self.instance.pk:
            instance.private_key = Builder.objects.get(pk=self.instance.pk).private_key
        budget = self.cleaned_data.get("storage_budget_gib")
        instance.storage_budget_bytes = None if budget is None else int(budget * GIB)
        if commit:
            instance.save()
        return instance


class RegistryCredentialForm(forms.ModelForm):
    password = forms.CharField(required=False, widget=forms.PasswordInput(render_value=False),
                               help_text="Stored encrypted; never shown again.")

    class Meta:
        model = RegistryCredential
        fields = ["registry", "username", "password", "insecure"]

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.team = team
        self.helper = FormHelper()
        self.helper.add_input(Submit("submit", "Save credential"))

    def clean_registry(self):
        value = self.cleaned_data["registry"].strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
        if not re.match(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$", value):
            raise ValidationError("Give the registry as host or host:port, e.g. quay.io.")
        qs = RegistryCredential.objects.filter(team=self.team, registry=value)
        if self.instance.pk:
            qs = qs.exclude(pk=self.instance.pk)
        if qs.exists():
            raise ValidationError("The team already has a credential for this registry; edit that one.")
        host, _, port = value.rpartition(":") if ":" in value else (value, "", "")
        try:
            egress.check(host, int(port) if port else 443, what=f"The registry {value}")
        except egress.EgressRefused as exc:
            raise ValidationError(str(exc)) from None
        return value

    def clean(self):
        data = super().clean()
        registry = data.get("registry", "")
        if data.get("insecure") and registry and not re.match(r"^(127\.|localhost(:|$)|\[::1\])", registry):
            self.add_error("insecure", "Only a loopback development registry may skip TLS verification.")
        return data


class GitCredentialForm(forms.Form):
    host = forms.CharField(max_length=255, label="Git host", help_text="host or host:port, e.g. github.com or "
                                                                        "git.example.com:8443")
    username = forms.CharField(max_length=200, required=False, label="User name",
                               help_text="Empty for hosts that take the token as the user name.")
    token = forms.CharField(required=False, label="Token or password", widget=forms.PasswordInput(render_value=False),
                            help_text="Stored encrypted and never shown again; empty keeps the stored one.")

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.team = team
        self.helper = FormHelper()
        self.helper.form_tag = False

    def clean_host(self):
        value = self.cleaned_data["host"].strip().lower()
        value = re.sub(r"^[a-z]+://", "", value).rstrip("/")
        if "@" in value or not re.match(r"^([a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(:[0-9]{1,5})?$", value):
            raise ValidationError("Give the git server as host or host:port, e.g. github.com (no user, no path).")
        host, _, port = value.rpartition(":") if not value.endswith("]") and ":" in value else (value, "", "")
        try:
            egress.check(host.strip("[]"), int(port) if port else 443, what=f"The git host {value}")
        except egress.EgressRefused as exc:
            raise ValidationError(str(exc)) from None
        return value

    def clean_token(self):
        token = self.cleaned_data.get("token") or ""
        if any(c in token for c in "\r\n\0"):
            raise ValidationError("A token is one line of text.")
        return token


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. 'GitLab CI for web-os'.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_class = "row row-cols-lg-auto g-2 align-items-end"
        self.helper.add_input(Submit("submit", "Create token"))


class BuildFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    status = django_filters.ChoiceFilter(choices=BuildStatus.choices, method="by_status", empty_label="Any status")
    trigger = django_filters.ChoiceFilter(field_name="run__trigger", empty_label="Any trigger", choices=[
        ("button", "Button"), ("api", "API"), ("webhook", "Webhook"), ("schedule", "Schedule")])
    team = django_filters.ModelChoiceFilter(field_name="definition__team", queryset=Team.objects.none(),
                                            empty_label="All my teams")

    def __init__(self, *args, teams=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.filters["team"].queryset = teams if teams is not None else Team.objects.none()

    def search(self, queryset, name, value):
        value = value.strip()
        query = Q(definition__name__icontains=value) | Q(digest__icontains=value)
        if value.isascii() and value.isdigit():
            query |= Q(number=int(value)) | Q(pk=int(value))
        return queryset.filter(query)

    def by_status(self, queryset, name, value):
        return queryset.with_status(value)


class ImageRetentionPolicyForm(forms.Form):
    """A definition's image retention (builds.retention). What is in use stays whatever the numbers say."""

    keep_last = forms.IntegerField(min_value=1, max_value=10_000, label="Keep the newest builds",
                                   help_text="The images of the newest N builds stay (at least 1).")
    keep_days = forms.IntegerField(min_value=0, max_value=36_500, label="Keep builds younger than (days)",
                                   help_text="0: age alone keeps nothing.")
    keep_stage_history = forms.IntegerField(min_value=0, max_value=1000, label="Keep each stage's last promotions",
                                            help_text="What each stage held in its last M promotions stays, so a "
                                                      "stage rollback finds it. What a stage holds now always stays.")
    on_schedule = forms.BooleanField(required=False, label="Apply it every day",
                                     help_text="The daily retention pass deletes what the dry run lists, without "
                                               "asking; each deletion is audited.")

    def __init__(self, *args, policy=None, **kwargs):
        super().__init__(*args, **kwargs)
        if policy is not None and not self.is_bound:
            self.initial.update({"keep_last": policy.keep_last, "keep_days": policy.keep_days,
                                 "keep_stage_history": policy.keep_stage_history, "on_schedule": policy.on_schedule})
