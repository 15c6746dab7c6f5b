"""Digests, durations and sizes are written one way, in Python (portal.formatting) and in templates ({% load
formatting %})."""

from datetime import timedelta

import pytest
from django.template import engines
from django.test import RequestFactory
from django.utils import timezone

from portal import formatting

DIGEST = "sha256:" + "ab12" * 16


def render(text, request=None, **context):
    return engines["django"].from_string(text).render(context, request=request)


def test_a_digest_is_shown_by_its_first_twelve_hex_digits():
    assert formatting.short_digest(DIGEST) == "ab12ab12ab12"
    assert formatting.short_digest("ab12" * 16) == "ab12ab12ab12"
    assert formatting.short_digest("") == "" and formatting.short_digest(None, missing="?") == "?"


@pytest.mark.parametrize(("seconds", "text"), [
    (0.85, "850 ms"), (42, "42 s"), (187, "3 min 07 s"), (3720, "1 h 02 min"), (timedelta(seconds=61), "1 min 01 s"),
    (None, ""),
])
def test_a_duration_reads_like_the_log_viewers(seconds, text):
    assert formatting.duration(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [(12, "12 s"), (240, "4 min"), (3 * 3600, "3 h"), (3 * 86400, "3 d")])
def test_an_age_keeps_only_its_largest_unit(seconds, text):
    assert formatting.duration(seconds, coarse=True) == text


def test_a_size_change_has_its_sign():
    assert formatting.size_change(1_200_000) == "+1.1\xa0MB"
    assert formatting.size_change(-340_000) == "−332.0\xa0KB"
    assert formatting.size_change(0) == "no change" and formatting.size_change(None) == "—"


def test_templates_use_the_same_functions():
    text = render("{% load formatting %}{{ d|short_digest }} {{ t|duration }} {{ w|age }} {{ c|size_change }} "
                  "{{ m|lookup:'k' }}", d=DIGEST, t=timedelta(seconds=187), w=timezone.now() - timedelta(minutes=4),
                  c=0, m={"k": "v"})
    assert text == "ab12ab12ab12 3 min 07 s 4 min no change v"


def test_pagination_links_keep_the_filters_and_change_only_the_page():
    class Page:
        number, start_index, end_index = 2, 26, 50
        has_other_pages = has_previous = has_next = lambda self: True  # noqa: E731
        previous_page_number, next_page_number = 1, 3

        class paginator:  # noqa: N801
            count, num_pages, capped = 100, 4, False

    request = RequestFactory().get("/hosts/", {"state": "drift", "page": "2", "q": "web&db"})
    text = render('{% include "includes/_pagination.html" %}', page=Page(), request=request)
    assert 'href="?state=drift&amp;page=3&amp;q=web%26db"' in text
    assert 'href="?state=drift&amp;page=1&amp;q=web%26db"' in text
