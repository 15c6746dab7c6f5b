"""What a browser shows of a page: the page with each fragment it loads on arrival (hx-trigger="load") swapped in, then
those that the loaded fragments load in turn, and the fragments' out-of-band parts put where they belong, as htmx
does."""

import html
import re

LOADER = re.compile(r'<(div|a|span)\b[^>]*\bhx-get="([^"]+)"[^>]*\bhx-trigger="load"[^>]*>.*?</\1>', re.S)
NESTING = 3  # a page's fragments may load fragments, which may load more
OUT_OF_BAND = re.compile(r'<(\w+) id="([^"]+)" hx-swap-oob="true">(.*?)</\1>', re.S)


def shown(client, url):
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    page = response.content.decode()
    out_of_band = []

    def load(match):
        fragment = client.get(html.unescape(match.group(2)), headers={"HX-Request": "true"})
        assert fragment.status_code == 200, (match.group(2), fragment.status_code)
        text = fragment.content.decode()
        out_of_band.extend(OUT_OF_BAND.findall(text))
        return OUT_OF_BAND.sub("", text)

    for _ in range(NESTING):
        page, loaded = LOADER.subn(load, page)
        if not loaded:
            break
    else:
        assert not LOADER.search(page), f"fragments nested deeper than {NESTING} on {url}"
    for tag, element_id, inner in out_of_band:
        page = re.sub(rf'<{tag} id="{re.escape(element_id)}">.*?</{tag}>',
                      lambda _, tag=tag, element_id=element_id, inner=inner: f'<{tag} id="{element_id}">{inner}</{tag}>',
                      page, count=1, flags=re.S)
    return page
