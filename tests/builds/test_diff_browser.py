"""Long Containerfile lines in a browser: the revision diff, the revision page and the build comparison wrap them inside
the page instead of cutting them off at the right edge."""

import pytest

from builds import services
from tests.browser import browser_page, log_in, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

LONG = ("RUN dnf -y install httpd mod_ssl php php-fpm php-mysqlnd php-gd php-xml php-mbstring php-intl php-opcache "
        "php-pecl-apcu php-pecl-redis5 php-sodium php-json nodejs npm git-core rsync tar unzip jq ImageMagick && dnf clean all "
        "&& echo the-end-of-a-very-long-line")
UNBROKEN = "LABEL org.example.checksum=" + "0123456789abcdef" * 20 + "-tail"


def test_long_diff_lines_wrap_inside_the_page(personas, portal_server):
    definition = services.definition_create(team=personas.team, user=personas.developer, name="web-os")
    services.revision_create(definition=definition, user=personas.developer,
                             containerfile="FROM quay.io/fedora/fedora-bootc:41\nRUN dnf -y install httpd\n")
    revision = services.revision_create(definition=definition, user=personas.developer,
                                        containerfile=f"FROM quay.io/fedora/fedora-bootc:41\n{LONG}\n{UNBROKEN}\n")
    with browser_page(width=1100) as page:
        log_in(page, portal_server.url, "viewer")
        for url, name in ((f"/images/{definition.pk}/diff/", "revision-diff-long-lines"),
                          (revision.get_absolute_url(), "revision-long-lines")):
            page.goto(portal_server.url + url)
            view = page.locator(".code-view").first
            assert view.evaluate("e => e.scrollWidth <= e.clientWidth"), url  # nothing hidden to the right
            edge = view.bounding_box()
            for text in ("the-end-of-a-very-long-line", "-tail"):
                cell = page.locator(".code-view td", has_text=text).last
                box = cell.bounding_box()
                assert box["x"] + box["width"] <= edge["x"] + edge["width"] + 1, (url, text)
                assert box["height"] > 30, (url, text)  # wrapped onto more than one line
            screenshot(page, name)
