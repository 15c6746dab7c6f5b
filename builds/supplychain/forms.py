from django import forms

from .models import SEVERITY_ORDER, KeyKind, SigningKey


class KeyGenerateForm(forms.Form):
    name = forms.CharField(max_length=60, help_text="Lower-case letters, digits, . _ - (e.g. release-2026).")
    kind = forms.ChoiceField(choices=KeyKind.choices, initial=KeyKind.GPG,
                             help_text="GPG works with every skopeo and podman; sigstore needs builds of them with "
                                       "sigstore (Debian's have it patched out).")


class KeyImportForm(forms.Form):
    name = forms.CharField(max_length=60)
    private_key = forms.CharField(widget=forms.Textarea(attrs={"rows": 5}), max_length=20_000,
                                  help_text="cosign's encrypted private key (cosign.key), PEM.")
    passphrase = forms.CharField(widget=forms.PasswordInput, required=False, strip=False)


class SignForm(forms.Form):
    key = forms.ModelChoiceField(queryset=SigningKey.objects.none(), empty_label=None)

    def __init__(self, *args, team, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["key"].queryset = SigningKey.objects.filter(team=team, retired_at__isnull=True)


class StagePolicyForm(forms.Form):
    key = forms.ModelChoiceField(queryset=SigningKey.objects.none(), required=False,
                                 empty_label="No signature required")

    def __init__(self, *args, team, empty_label=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["key"].queryset = SigningKey.objects.filter(team=team, retired_at__isnull=True)
        if empty_label:
            self.fields["key"].empty_label = empty_label


class FeedImportForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="e.g. debian-bookworm; an import replaces the feed's advisories.")
    file = forms.FileField(help_text="OSV JSON or CSAF: one document, a list of them, or a zip of them (OSV's all.zip).")


class RotateForm(forms.Form):
    new_key = forms.ModelChoiceField(queryset=SigningKey.objects.none(), empty_label=None, label="Rotate to",
                                     help_text="Another active key of the same kind (generate it first).")
    old_until = forms.DateTimeField(label="The old key verifies until (UTC)",
                                    widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
                                    help_text="Hosts and stages accept both GPG keys until then; then the old key is "
                                              "retired.")

    def __init__(self, *args, key, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["new_key"].queryset = SigningKey.objects.filter(team=key.team, kind=key.kind,
                                                                    retired_at__isnull=True).exclude(pk=key.pk)




class FeedSourceForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="The feed it fills (e.g. rhel-9-csaf); made if it is new.")
    url = forms.CharField(max_length=500, required=False, label="URL",
                          help_text="https:// or http://, e.g. a mirror inside the site. Empty: stop reading it.")
    refresh_hours = forms.IntegerField(min_value=1, max_value=720, initial=24, label="Read every (hours)")


class StageVulnerabilityForm(forms.Form):
    refuse_from = forms.ChoiceField(choices=[("", "Refuses nothing for vulnerabilities")]
                                    + [(s.value, f"Refuses {s.label.lower()} or worse") for s in SEVERITY_ORDER[:4]],
                                    required=False)


class OverrideForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), max_length=2000,
                             help_text="Why this image may go in anyway: recorded in the audit trail, shown on the card.")
