"""The host page's timeline strip: the booted digest over time as coloured segments, rollbacks marked."""

from datetime import timedelta

import pytest
from django.utils import timezone

from hosts.bootstrip import boot_strip
from hosts.models import EventKind, HostEvent
from tests.hosts.test_integration_links import D1, D2, make_host

pytestmark = pytest.mark.django_db


@pytest.fixture
def host(personas):
    host = make_host(personas.team, "web-01", booted_digest=D1)
    now = timezone.now()
    for hours_ago, kind, digest in ((40, EventKind.FIRST_SEEN, D1), (30, EventKind.BOOTED, D2),
                                    (20, EventKind.ROLLED_BACK, D1), (10, EventKind.UNREACHABLE, "")):
        HostEvent.objects.create(host=host, at=now - timedelta(hours=hours_ago), kind=kind, digest=digest,
                                 version="1.0" if digest == D1 else "1.1", summary=f"{kind} {hours_ago} h ago")
    return host


def test_each_boot_is_a_segment_until_the_next_and_a_digest_keeps_its_colour(host):
    now = timezone.now()
    strip = boot_strip(host, now=now)
    assert [(s.digest, s.colour, s.by_rollback) for s in strip.segments] == [(D1, 0, False), (D2, 1, False),
                                                                            (D1, 0, True)]
    assert [s.x for s in strip.segments] == ["0.00", "250.00", "500.00"]
    assert strip.segments[0].width == "250.00" and strip.segments[2].width == "500.00"  # the last one lasts till now
    assert [m.x for m in strip.rollbacks] == ["500.00"]
    assert [s.digest for s in strip.legend] == [D1, D2]


def test_a_host_never_read_has_no_strip(personas):
    assert boot_strip(make_host(personas.team, "new-01")) is None


def test_the_host_page_draws_the_strip_above_the_timeline_with_no_inline_style(client_for, personas, host):
    for user in (personas.viewer, personas.helpdesk):
        html = client_for(user).get(host.get_absolute_url()).content.decode()
        strip = html.split('class="boot-strip"')[1].split('class="list-group list-group-flush timeline"')[0]
        assert strip.count('class="bs-c0"') == 2 and strip.count('class="bs-c1"') == 1
        assert 'class="bs-rollback"' in strip and "rolled_back 20 h ago" in strip
        assert 'style="' not in strip
