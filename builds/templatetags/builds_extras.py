"""Small display filters for build pages."""

from django import template

register = template.Library()


@register.filter
def duration(value):
    """A timedelta as '42 s', '3 min 5 s' or '1 h 02 min'."""
    if value is None:
        return ""
    seconds = int(value.total_seconds())
    if seconds < 1:
        return "under 1 s"
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@register.filter
def signed_bytes(value):
    """+1.2 MB / −340 KB for a size change in bytes."""
    if value is None:
        return "—"
    from django.template.defaultfilters import filesizeformat

    if value == 0:
        return "no change"
    return ("+" if value > 0 else "−") + filesizeformat(abs(value))


@register.filter
def get_item(mapping, key):
    return (mapping or {}).get(key)
