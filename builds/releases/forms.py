"""Forms for promotion requests, decisions, rollbacks, stage policies, freezes, change windows and approver groups
(crispy, Bootstrap 5). They validate input; the rules live in `services` and `policy`."""

import django_filters
from crispy_forms.helper import FormHelper
from django import forms
from django.db.models import Q

from builds.models import Build, ImageDefinition
from portal.models import Membership, Team, User

from .models import WEEKDAYS, Promotion, PromotionKind, PromotionStatus, Stage


def _helper():
    helper = FormHelper()
    helper.form_tag = False
    helper.disable_csrf = True
    return helper


class PromotionRequestForm(forms.Form):
    """Promote one build of a definition to one of its team's stages."""

    build = forms.ModelChoiceField(queryset=Build.objects.none(), label="Image",
                                   help_text="A successful build of this definition; its digest is what gets promoted.")
    target_stage = forms.ModelChoiceField(queryset=Stage.objects.none(), label="To stage")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), max_length=2000,
                             help_text="What approvers should know: what changed, how it was tested.")
    emergency = forms.BooleanField(required=False, label="Emergency override",
                                   help_text="Applies during a freeze or outside change windows; needs extra approvals.")
    emergency_reason = forms.CharField(required=False, max_length=500, label="Why it cannot wait",
                                       help_text="Only for an emergency override.")
    roll_forward = forms.BooleanField(required=False, label="Roll forward",
                                      help_text="The stage is pinned after a rollback: move it on explicitly.")
    confirm = forms.CharField(required=False, max_length=100, label="Type the stage's name to move it back",
                              help_text="Only for an older build than the stage holds, to a stage that needs no "
                                        "approval: the request applies at once.")

    def __init__(self, *args, definition: ImageDefinition, **kwargs):
        super().__init__(*args, **kwargs)
        self.definition = definition
        builds = Build.objects.with_related().filter(definition=definition).succeeded().order_by("-number")
        self.fields["build"].queryset = builds
        self.fields["build"].label_from_instance = lambda b: (
            f"#{b.number} · r{b.revision.number} · {b.short_digest} · {b.platform}"
            + (f" · {b.revision.message[:50]}" if b.revision.message else ""))
        self.fields["target_stage"].queryset = definition.team.stages.all()
        self.fields["target_stage"].label_from_instance = lambda s: s.name
        self.helper = _helper()

    def clean(self):
        data = super().clean()
        if data.get("emergency") and not (data.get("emergency_reason") or "").strip():
            self.add_error("emergency_reason", "Say what cannot wait for the change window.")
        return data


class DecisionForm(forms.Form):
    digest = forms.CharField(widget=forms.HiddenInput, max_length=80)
    comment = forms.CharField(required=False, max_length=2000, widget=forms.Textarea(attrs={"rows": 2}),
                              label="Comment", help_text="Required to reject.")
    confirm = forms.CharField(required=False, max_length=100, label="Type the stage's name to confirm",
                              help_text="Needed only to approve a request that would move its stage back.")


class RollbackForm(forms.Form):
    definition = forms.IntegerField(widget=forms.HiddenInput)
    digest = forms.CharField(widget=forms.HiddenInput, max_length=80)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000,
                             help_text="What is wrong with what the stage holds now.")


class StagePolicyForm(forms.ModelForm):
    class Meta:
        model = Stage
        fields = ["description", "required_approvals", "exclude_requester", "exclude_author", "exclude_build_triggerer",
                  "approval_ttl_hours", "require_previous_stage", "require_boot_test", "emergency_extra_approvals",
                  "rollback_required_approvals", "window_timezone"]
        labels = {
            "required_approvals": "Approvals needed",
            "exclude_requester": "The requester cannot approve",
            "exclude_author": "The revision's author cannot approve",
            "exclude_build_triggerer": "Whoever started the build cannot approve",
            "approval_ttl_hours": "Approvals expire after (hours)",
            "require_previous_stage": "Must have been in the previous stage",
            "require_boot_test": "Must have passed a boot test",
            "emergency_extra_approvals": "Extra approvals for an emergency",
            "rollback_required_approvals": "Approvals needed for a rollback",
            "window_timezone": "Time zone of the change windows",
        }
        help_texts = {"exclude_requester": "", "exclude_author": "", "exclude_build_triggerer": "",
                      "emergency_extra_approvals": "An emergency override applies during freezes and outside change "
                                                   "windows.",
                      "window_timezone": "e.g. UTC, Europe/Paris, America/New_York"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.groups = list(self.instance.team.approver_groups.order_by("name"))
        current = {req.group_id: req.minimum for req in self.instance.group_requirements.all()}
        for group in self.groups:
            self.fields[f"group_{group.pk}"] = forms.IntegerField(
                min_value=0, max_value=20, required=False, initial=current.get(group.pk, 0),
                label=f"From {group.name}", help_text=f"{group.members.count()} member(s)")
        self.helper = _helper()

    def group_minimums(self):
        return {group: self.cleaned_data.get(f"group_{group.pk}") or 0 for group in self.groups}

    def group_fields(self):
        return [self[f"group_{group.pk}"] for group in self.groups]

    def clean(self):
        data = super().clean()
        total = sum(v for k, v in data.items() if k.startswith("group_") and v)
        if total and total > (data.get("required_approvals") or 0):
            self.add_error("required_approvals", f"The groups ask for {total} approvals; raise this to at least {total}.")
        return data


class FreezeForm(forms.Form):
    reason = forms.CharField(max_length=300, help_text="Shown to everyone who asks for a promotion to this stage.")
    ends_at = forms.DateTimeField(required=False, label="Until (UTC)",
                                  widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
                                  help_text="Empty: until someone lifts it.")


class ChangeWindowForm(forms.Form):
    weekdays = forms.TypedMultipleChoiceField(choices=list(enumerate(WEEKDAYS)), coerce=int,
                                              widget=forms.CheckboxSelectMultiple, label="Days")
    starts = forms.TimeField(widget=forms.TimeInput(attrs={"type": "time"}), label="From")
    ends = forms.TimeField(widget=forms.TimeInput(attrs={"type": "time"}), label="To",
                           help_text="An end before the start runs past midnight.")


class ApproverGroupForm(forms.Form):
    name = forms.CharField(max_length=60)
    description = forms.CharField(max_length=300, required=False)
    members = forms.ModelMultipleChoiceField(queryset=User.objects.none(), required=False,
                                             widget=forms.CheckboxSelectMultiple,
                                             help_text="Members of the team. A group member may approve promotions to "
                                                       "the stages that require the group, whatever their role.")

    def __init__(self, *args, team: Team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["members"].queryset = User.objects.filter(
            pk__in=Membership.objects.filter(team=team).people().values("user")).order_by("username")
        self.fields["members"].label_from_instance = lambda u: u.username
        self.helper = _helper()


class PromotionFilter(django_filters.FilterSet):
    q = django_filters.CharFilter(method="search", label="Search")
    status = django_filters.ChoiceFilter(choices=PromotionStatus.choices, empty_label="Any status")
    stage = django_filters.CharFilter(field_name="target_stage__name", label="Stage")
    kind = django_filters.ChoiceFilter(choices=PromotionKind.choices, empty_label="Any kind")
    team = django_filters.ModelChoiceFilter(field_name="target_stage__team", queryset=Team.objects.none(),
                                            empty_label="All my teams")

    class Meta:
        model = Promotion
        fields = ["q", "status", "stage", "kind", "team"]

    def __init__(self, *args, teams=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.filters["team"].queryset = teams if teams is not None else Team.objects.none()
        for name in ("status", "kind", "team"):
            self.form.fields[name].widget.attrs["class"] = "form-select form-select-sm"

    def search(self, queryset, name, value):
        value = value.strip()
        query = (Q(definition__name__icontains=value) | Q(digest__icontains=value) | Q(reason__icontains=value)
                 | Q(requested_by_name__icontains=value))
        if value.lstrip("#").isdecimal():
            query |= Q(pk=int(value.lstrip("#")))
        return queryset.filter(query)
