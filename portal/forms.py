import django_filters
from crispy_forms.helper import FormHelper
from crispy_forms.layout import Submit
from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import AuthenticationForm
from django.core.validators import MaxLengthValidator
from django.db.models import Q
from django.urls import reverse

from . import registry
from .models import PERSONAL_SCOPES, AuditEvent, NotificationWebhook, Role, Scope, Team

User = get_user_model()


class LoginForm(AuthenticationForm):
    error_messages = {
        "invalid_login": "That username and password do not match. Check both and try again; after %(limit)s failed "
        "attempts the account is locked for a while.",
        "inactive": "This account is disabled. Ask a portal admin to enable it.",
    }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.error_messages = {
            key: value % {"limit": settings.AXES_FAILURE_LIMIT} if "%(limit)s" in value else value
            for key, value in self.error_messages.items()
        }
        self.fields["username"].widget.attrs.update({"autofocus": True, "autocomplete": "username"})
        # Django's AuthenticationForm only sets the field's max_length (no validator), so an over-long username reached
        # authenticate() and django-axes' failure record (255 characters at most): a 500.
        self.fields["username"].validators.append(MaxLengthValidator(self.fields["username"].max_length))
        self.helper = FormHelper()
        self.helper.add_input(Submit("submit", "Log in", css_class="w-100"))


class SecondFactorForm(forms.Form):
    code = forms.CharField(
        label="Code", max_length=32,
        help_text="The six digits your authenticator app shows now, or one of your backup codes.",
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autofocus": True, "spellcheck": "false",
                                      "autocapitalize": "off"}),
    )

    def __init__(self, *args, setting_up=False, **kwargs):
        super().__init__(*args, **kwargs)
        if setting_up:  # no backup codes exist yet
            self.fields["code"].help_text = "The six digits the app shows now."
            self.fields["code"].widget.attrs["inputmode"] = "numeric"


class MemberAddForm(forms.Form):
    user = forms.CharField(label="Username or email", max_length=254)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.DEVELOPER)

    def __init__(self, *args, team=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.form_id = "member-add"
        if team is not None:  # shown on the team's page, posted to its own URL
            self.helper.form_action = reverse("portal:member_add", args=[team.slug])
        self.helper.form_class = "row row-cols-lg-auto g-2 align-items-end"
        self.helper.add_input(Submit("submit", "Add member"))

    def clean_user(self):
        value = self.cleaned_data["user"].strip()
        matches = list(User.objects.filter(Q(username__iexact=value) | Q(email__iexact=value), is_active=True)[:2])
        if not matches:
            raise forms.ValidationError(f"No active user is called {value!r} or has that email address.")
        if len(matches) > 1:
            raise forms.ValidationError("Several users have that email address; use the username instead.")
        return matches[0]


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices)


class TeamForm(forms.ModelForm):
    class Meta:
        model = Team
        fields = ["name", "description"]
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.helper = FormHelper()
        self.helper.add_input(Submit("submit", "Create team"))

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        slug = Team.slug_for(name)
        if not slug:
            raise forms.ValidationError("Use at least one letter or digit in the name.")
        if Team.objects.filter(slug=slug).exists():
            raise forms.ValidationError("A team with that name already exists.")
        return name


class NotificationWebhookForm(forms.ModelForm):
    """A team's outbound webhook: where to POST, and which of the features' events (portal.registry)."""

    events = forms.MultipleChoiceField(choices=registry.notification_events, widget=forms.CheckboxSelectMultiple)
    url = forms.URLField(label="Payload URL", max_length=500, assume_scheme="https",
                         help_text="The portal POSTs JSON here, signed (see the verification method below).")

    class Meta:
        model = NotificationWebhook
        fields = ["name", "url", "events", "active"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["events"].initial = [kind for kind, _ in registry.notification_events()]
        self.helper = FormHelper()
        self.helper.form_tag = False
        self.helper.disable_csrf = True


class AuditFilter(django_filters.FilterSet):
    team = django_filters.ModelChoiceFilter(queryset=Team.objects.none(), empty_label="All teams")
    actor = django_filters.CharFilter(field_name="actor_name", lookup_expr="iexact", label="Actor")
    action = django_filters.CharFilter(lookup_expr="istartswith", label="Action")
    object = django_filters.CharFilter(method="filter_object", label="Object")
    q = django_filters.CharFilter(field_name="summary", lookup_expr="icontains", label="Summary contains")

    class Meta:
        model = AuditEvent
        fields = ["team", "actor", "action", "object", "q"]

    def __init__(self, *args, teams=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.filters["team"].queryset = teams if teams is not None else Team.objects.none()

    def filter_object(self, queryset, name, value):
        """`build:12`, `portal.team:3`, a bare id, or words from the object's name."""
        value = value.strip()
        if ":" in value:
            kind, _, pk = value.rpartition(":")
            return queryset.filter(object_type__iendswith=kind, object_id=pk)
        if value.isdigit():
            return queryset.filter(object_id=value)
        return queryset.filter(object_repr__icontains=value)


def add_service_errors(form, exc):
    """Show a service's ValidationError on the form: messages keyed by a field of the form go under that field, the
    rest at the top."""
    if hasattr(exc, "error_dict"):
        for key, errors in exc.message_dict.items():
            for error in errors:
                form.add_error(key if key in form.fields else None, error)
    else:
        for error in exc.messages:
            form.add_error(None, error)


class ExplainLogForm(forms.Form):
    """A pasted log for the explain page; its size is bounded so that one paste cannot hold a web process for long."""

    TOOLS = [("", "Any (recognise it)"), ("podman", "podman / buildah build"),
             ("bootc-image-builder", "bootc-image-builder conversion"), ("bootc", "bootc on a host"),
             ("anaconda", "Anaconda install")]
    OUTCOMES = [("", "Not known"), ("failed", "It failed"), ("succeeded", "It exited 0")]

    log = forms.CharField(widget=forms.Textarea(attrs={"rows": 14, "class": "font-monospace", "spellcheck": "false"}),
                          strip=False, help_text="A build, conversion or bootc log: the failing step and what follows "
                                                 "are enough.")
    tool = forms.ChoiceField(choices=TOOLS, required=False, label="Tool")
    outcome = forms.ChoiceField(choices=OUTCOMES, required=False, label="How the run ended")

    def clean_log(self):
        text = self.cleaned_data["log"]
        limit = settings.EXPLAIN_LOG_MAX_CHARS
        if len(text) > limit:
            raise forms.ValidationError(
                f"This log is {len(text):,} characters; the page explains up to {limit:,}. Paste the end of it (the "
                f"failing step and what follows), or run manage.py explain_log on the whole file.")
        if not text.strip():
            raise forms.ValidationError("Paste a log to explain.")
        return text

    @property
    def succeeded(self):
        return {"failed": False, "succeeded": True}.get(self.cleaned_data.get("outcome") or "")


class AccessTokenForm(forms.Form):
    """A new API token: a name, scopes and an expiry (days from now)."""

    EXPIRY_CHOICES = [(1, "1 day"), (7, "7 days"), (30, "30 days"), (90, "90 days"), (365, "1 year")]

    name = forms.CharField(max_length=100, help_text="Where it is used, e.g. \"GitLab CI: web-os\".")
    scopes = forms.MultipleChoiceField(choices=[(value, f"{value}: {label}") for value, label in Scope.choices],
                                       widget=forms.CheckboxSelectMultiple, initial=[Scope.READ],
                                       help_text="A scope is a ceiling: the token never does more than its owner's "
                                                 "role allows.")
    expires_in_days = forms.TypedChoiceField(label="Expires in", choices=EXPIRY_CHOICES, coerce=int, initial=30)

    def __init__(self, *args, team=None, **kwargs):
        super().__init__(*args, **kwargs)
        if team is not None:
            self.fields["scopes"].choices = [(value, f"{value}: {label}") for value, label in Scope.choices
                                             if value not in PERSONAL_SCOPES]
            self.fields["scopes"].help_text = ("A team token acts in this team only, as a member with one role: read "
                                               "(viewer), build and promote (developer) or operate (operator).")
        self.fields["expires_in_days"].choices = [
            (days, label) for days, label in self.EXPIRY_CHOICES
            if not settings.API_TOKEN_MAX_DAYS or days <= settings.API_TOKEN_MAX_DAYS]
        self.helper = FormHelper()
        self.helper.form_tag = False
        self.helper.disable_csrf = True
