"""The rollout policy form and the start form. Maintenance windows are written one per line, as people say them:
`Mon-Fri 22:00-04:00` or `Sat,Sun 01:00-05:00`."""

import re

from django import forms

from builds.releases.models import WEEKDAYS

from .models import RolloutPolicy

_DAY = {name.lower(): number for number, name in enumerate(WEEKDAYS)}
_WINDOW = re.compile(r"^(?P<days>[A-Za-z,\- ]+?)\s+(?P<starts>\d{1,2}:\d{2})\s*-\s*(?P<ends>\d{1,2}:\d{2})$")


def parse_windows(text):
    """`Mon-Fri 22:00-04:00` per line -> [{"weekdays": [...], "starts": "22:00", "ends": "04:00"}]; ValueError says
    which line is wrong and how to write it."""
    windows = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        match = _WINDOW.match(line)
        if not match:
            raise ValueError(f"Line {number} ({line!r}): write a window as days and hours, e.g. Mon-Fri 22:00-04:00.")
        days = set()
        for part in match["days"].replace(" ", "").lower().split(","):
            first, _, last = part.partition("-")
            if first[:3] not in _DAY or (last and last[:3] not in _DAY):
                raise ValueError(f"Line {number}: {part!r} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun).")
            a, b = _DAY[first[:3]], _DAY[(last or first)[:3]]
            days |= set(range(a, b + 1)) if a <= b else set(range(a, 7)) | set(range(0, b + 1))
        times = []
        for value in (match["starts"], match["ends"]):
            hours, minutes = (int(x) for x in value.split(":"))
            if hours > 23 or minutes > 59:
                raise ValueError(f"Line {number}: {value} is not a time of day.")
            times.append(f"{hours:02d}:{minutes:02d}")
        windows.append({"weekdays": sorted(days), "starts": times[0], "ends": times[1]})
    return windows


def windows_text(windows):
    return "\n".join(f"{','.join(WEEKDAYS[d] for d in w['weekdays'])} {w['starts']}-{w['ends']}" for w in windows)


class PolicyForm(forms.ModelForm):
    windows = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Hosts reboot only inside these windows (downloads happen at any time); one per line, e.g. "
                  "Mon-Fri 22:00-04:00. Empty: at any time.")

    class Meta:
        model = RolloutPolicy
        fields = ["follow_automatically", "canary_selector", "canary_count", "canary_percent", "batch_count",
                  "batch_percent", "soak_seconds", "max_failed_percent", "max_failed_total", "rollback_failed",
                  "budget_label", "max_updating_per_group", "max_downloading_per_group", "soft_reboot",
                  "window_timezone"]

    def clean_windows(self):
        try:
            return parse_windows(self.cleaned_data.get("windows"))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class StartForm(forms.Form):
    reference = forms.CharField(max_length=512, help_text="The image the hosts are to run: repository:tag.")
    digest = forms.RegexField(regex=r"^sha256:[0-9a-f]{64}$", max_length=80,
                              error_messages={"invalid": "A digest is sha256: and 64 hex digits."})
    switch = forms.BooleanField(required=False, help_text="Switch the hosts to this image (another image stream, e.g. "
                                                          "web-os 9 → web-os 10) instead of upgrading what they track.")
