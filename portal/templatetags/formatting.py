"""Digests, durations and sizes in templates: thin filters over `portal.formatting`, so pages and Python code write
them the same way."""

from django import template
from django.utils import timezone

from portal import formatting

register = template.Library()


@register.filter
def short_digest(digest):
    return formatting.short_digest(digest)


@register.filter
def duration(value):
    """Seconds or a timedelta: "850 ms", "42 s", "3 min 07 s", "1 h 02 min"."""
    return formatting.duration(value)


@register.filter
def age(when):
    """How long ago `when` was, in its largest unit: "12 s", "4 min", "3 h", "2 d"."""
    if not when:
        return ""
    return formatting.duration(timezone.now() - when, coarse=True)


@register.filter
def size_change(value):
    return formatting.size_change(value)


@register.filter
def lookup(mapping, key):
    """mapping[key], or None: for a value kept in a dictionary by a key the template holds."""
    return mapping.get(key) if mapping else None
