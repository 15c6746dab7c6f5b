import django_filters
from crispy_forms.helper import FormHelper
from crispy_forms.layout import Column, Layout, Row, Submit
from django import forms

from builds.releases.models import Stage
from portal import ssh
from portal.models import Team
from portal.text import first_nul

from .models import Host, HostState, JumpHost, RuntimePolicy

STATE_FILTER_CHOICES = HostState.choices
ONLY_CHOICES = [("update", "With an update available"), ("runtime", "Changed at runtime"),
                ("unenforced", "Not enforcing signatures"),
                ("noncompliant", "Non-compliant (changed where the stage forbids it)")]


class HostFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="filter_q", label="Name, address, label or digest")
    team = django_filters.ChoiceFilter(choices=(), empty_label="All teams", field_name="team")
    stage = django_filters.ChoiceFilter(method="filter_stage", choices=(), empty_label="Any stage")
    state = django_filters.ChoiceFilter(method="filter_state", choices=STATE_FILTER_CHOICES, empty_label="Any state")
    label = django_filters.CharFilter(method="filter_label", label="Label")
    only = django_filters.ChoiceFilter(method="filter_only", choices=ONLY_CHOICES, empty_label="All hosts",
                                       label="Only")

    class Meta:
        model = Host
        fields = ["q", "team", "stage", "state", "label", "only"]

    def __init__(self, *args, teams=(), **kwargs):
        """`teams`: the teams the user reads, as a list (read once per request), so that neither choices list asks
        for them again."""
        super().__init__(*args, **kwargs)
        self.filters["team"].extra["choices"] = [(team.pk, team.name) for team in teams]
        names = Stage.objects.filter(team_id__in=[team.pk for team in teams]).values_list("name", flat=True) \
            .distinct().order_by("name")
        self.filters["stage"].extra["choices"] = [(n, n) for n in names] + [("-", "No stage")]
        for field in self.form.fields.values():
            css = "form-select form-select-sm" if hasattr(field, "choices") else "form-control form-control-sm"
            field.widget.attrs["class"] = css

    def filter_q(self, queryset, name, value):
        return queryset.search(value)

    def filter_stage(self, queryset, name, value):
        if value == "-":
            return queryset.filter(stage__isnull=True)
        return queryset.filter(stage__name=value)

    def filter_state(self, queryset, name, value):
        return queryset.filter(state=value)

    def filter_only(self, queryset, name, value):
        if value == "runtime":
            return queryset.changed_at_runtime()
        if value == "unenforced":
            return queryset.not_enforcing()
        if value == "noncompliant":
            return queryset.non_compliant()
        return queryset.update_available() if value == "update" else queryset

    def filter_label(self, queryset, name, value):
        return queryset.with_label(value) if value.strip() else queryset


class HostForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.none())
    name = forms.CharField(max_length=200, help_text="How people call it, e.g. web-03.")
    address = forms.CharField(max_length=255, help_text="DNS name or IP address the portal connects to.")
    port = forms.IntegerField(min_value=1, max_value=65535, initial=22)
    ssh_user = forms.CharField(label="SSH user", max_length=64, initial="root",
                               help_text="root, or a user that may run bootc with sudo without a password.")
    jump_host = forms.ModelChoiceField(queryset=JumpHost.objects.none(), required=False,
                                       help_text="Reach the host through this bastion.")
    stage = forms.ModelChoiceField(queryset=Stage.objects.none(), required=False,
                                   help_text="The stage whose tag the host tracks (for drift and per-stage counts).")
    tracked_image = forms.CharField(label="Image it tracks", max_length=512, required=False,
                                    help_text="registry/repository:tag. With a stage and no tag, the stage's tag is "
                                              "added. Empty: learnt from the host (spec.image).")
    labels = forms.CharField(max_length=500, required=False, help_text="Space-separated words, e.g. web eu-west.")
    host_key = forms.CharField(label="Host key (optional)", required=False,
                               widget=forms.Textarea(attrs={"rows": 2, "placeholder": "ssh-ed25519 AAAA..."}),
                               help_text="Paste it if you have it (ssh-keyscan or /etc/ssh/ssh_host_ed25519_key.pub); "
                                         "otherwise the portal fetches it and you confirm its fingerprint.")

    def __init__(self, *args, teams, host=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams
        self.fields["stage"].queryset = Stage.objects.filter(team__in=teams).select_related("team")
        self.fields["stage"].label_from_instance = lambda s: f"{s.team.name}: {s.name}"
        self.fields["jump_host"].queryset = JumpHost.objects.filter(team__in=teams).select_related("team")
        if len(teams) == 1:
            self.fields["team"].initial = teams.first()
        if host is not None:
            del self.fields["team"]
            del self.fields["host_key"]
        self.helper = FormHelper()
        self.helper.layout = Layout(
            *(["team"] if host is None else []),
            Row(Column("name", css_class="col-md-6"), Column("address", css_class="col-md-6")),
            Row(Column("port", css_class="col-md-3"), Column("ssh_user", css_class="col-md-4"),
                Column("jump_host", css_class="col-md-5")),
            Row(Column("stage", css_class="col-md-4"), Column("tracked_image", css_class="col-md-8")),
            "labels",
            *(["host_key"] if host is None else []),
        )
        self.helper.add_input(Submit("submit", "Add host" if host is None else "Save changes"))

    def clean(self):
        data = super().clean()
        team = data.get("team")
        for field in ("stage", "jump_host"):
            value = data.get(field)
            if team is not None and value is not None and value.team_id != team.pk:
                self.add_error(field, f"Pick one of {team}'s {field.replace('_', ' ')}s.")
        image = (data.get("tracked_image") or "").strip()
        if image and not ssh.valid_image_reference(image):
            self.add_error("tracked_image", "Enter an image reference such as registry.example.com/team/os:prod.")
        key = (data.get("host_key") or "").strip()
        if key:
            try:
                data["host_key"] = ssh.parse_public_key(key)
            except ValueError as exc:
                self.add_error("host_key", str(exc))
        return data


class ImportForm(forms.Form):
    team = forms.ModelChoiceField(queryset=Team.objects.none())
    file = forms.FileField(required=False, help_text="A .csv file, at most 5 MB.")
    text = forms.CharField(label="…or paste CSV", required=False, widget=forms.Textarea(attrs={
        "rows": 6, "placeholder": "name,address,port,user,labels,stage,image,host_key\n"
                                  "web-01,10.0.0.1,22,root,web eu,prod,registry.example.com/platform/web-os,"}))

    MAX_BYTES = 5 * 1024 * 1024

    def __init__(self, *args, teams, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams
        if len(teams) == 1:
            self.fields["team"].initial = teams.first()
        self.helper = FormHelper()
        self.helper.add_input(Submit("submit", "Import"))

    def clean(self):
        data = super().clean()
        upload = data.get("file")
        if upload:
            if upload.size > self.MAX_BYTES:
                raise forms.ValidationError("The file is larger than 5 MB; split it.")
            try:
                data["csv"] = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                raise forms.ValidationError("The file is not UTF-8 text.") from None
            nul = first_nul(data["csv"])
            if nul is not None:
                raise forms.ValidationError(f"Line {nul[0]} of the file holds a NUL character (column {nul[1]}): "
                                            "a CSV file is text.")
        else:
            data["csv"] = data.get("text") or ""
        if not data["csv"].strip():
            raise forms.ValidationError("Choose a file or paste CSV.")
        return data


class KeyForm(forms.Form):
    key = forms.CharField(label="Host key", widget=forms.Textarea(attrs={"rows": 2, "placeholder": "ssh-ed25519 AAAA..."}),
                          help_text="A public host key, a known_hosts line or ssh-keyscan output.")

    def clean_key(self):
        try:
            return ssh.parse_public_key(self.cleaned_data["key"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class SwitchForm(forms.Form):
    image = forms.CharField(max_length=512, help_text="registry/repository:tag or registry/repository@sha256:…, in one of "
                                                      "the team's repositories.")

    def clean_image(self):
        image = self.cleaned_data["image"].strip()
        if not ssh.valid_image_reference(image):
            raise forms.ValidationError("Enter an image reference such as registry.example.com/team/os:prod.")
        return image


class RuntimePolicyForm(forms.ModelForm):
    class Meta:
        model = RuntimePolicy
        fields = ["drift", "rollouts"]
        labels = {"drift": "Runtime changes on this stage's hosts", "rollouts": "A rollout meets a non-compliant host"}
        widgets = {"drift": forms.RadioSelect, "rollouts": forms.RadioSelect}


class JumpHostForm(forms.Form):
    name = forms.CharField(max_length=100)
    address = forms.CharField(max_length=255)
    port = forms.IntegerField(min_value=1, max_value=65535, initial=22)
    ssh_user = forms.CharField(label="SSH user", max_length=64, initial="root")
    host_key = forms.CharField(widget=forms.Textarea(attrs={"rows": 2, "placeholder": "ssh-ed25519 AAAA..."}),
                               help_text="The bastion's public host key; it is pinned like a host's.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.add_input(Submit("submit", "Add jump host"))

    def clean_host_key(self):
        try:
            return ssh.parse_public_key(self.cleaned_data["host_key"])
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


EXPIRY_CHOICES = [("1", "in 1 hour"), ("24", "in 1 day"), ("168", "in 7 days"), ("720", "in 30 days"),
                  ("2160", "in 90 days")]


class EnrollmentTokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What it is for, e.g. edge appliances, batch 3.")
    stage = forms.ModelChoiceField(queryset=Stage.objects.none(), required=False, empty_label="No stage",
                                   help_text="The stage the enrolled hosts follow.")
    uses = forms.IntegerField(min_value=1, max_value=100000, initial=1,
                              help_text="How many hosts may enroll with it (1: a single host).")
    expires_in_hours = forms.TypedChoiceField(label="Expires", choices=EXPIRY_CHOICES, coerce=int, initial="168")
    labels = forms.CharField(max_length=500, required=False, help_text="Labels the enrolled hosts get.")
    pre_approved = forms.BooleanField(required=False, label="Pre-approve the hosts",
                                      help_text="Hosts enrolled with it report at once; otherwise each waits for an "
                                                "admin's approval.")

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["stage"].queryset = Stage.objects.filter(team=team).order_by("position")
        self.fields["stage"].label_from_instance = lambda stage: stage.name
        self.helper = FormHelper()
        self.helper.add_input(Submit("submit", "Create enrollment token"))
