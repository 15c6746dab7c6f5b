"""The portal's REST API (/api/v1/) over HTTP, with the standard library.

Errors come back as RFC 9457 problem documents; `ApiError` carries one and maps its status to the CLI's exit code.
A 429 is waited out (its `Retry-After`, at most RETRY_AFTER_MAX seconds, RETRIES times) before it counts as an error.
"""

import json
import time
import urllib.error
import urllib.parse
import urllib.request

from . import exits

RETRIES = 3
RETRY_AFTER_MAX = 60
TIMEOUT = 30
USER_AGENT = "imp (image-mode-portal CLI)"


class ApiError(Exception):
    """A request the portal refused, or could not answer."""

    def __init__(self, status: int, problem: dict, *, method: str = "", path: str = ""):
        self.status, self.problem, self.method, self.path = status, problem, method, path
        super().__init__(self.message())

    def message(self) -> str:
        problem = self.problem
        text = problem.get("detail") or problem.get("title") or f"HTTP {self.status}"
        fields = problem.get("errors") or []
        details = []
        for error in fields if isinstance(fields, list) else []:
            if isinstance(error, dict):
                where = error.get("field") or error.get("pointer") or ".".join(str(p) for p in error.get("loc", []))
                what = error.get("message") or error.get("msg") or error.get("detail") or ""
                details.append(f"{where}: {what}" if where else what)
        if details:
            text += " (" + "; ".join(details) + ")"
        return text

    @property
    def exit_code(self) -> int:
        return exits.for_status(self.status)


class Client:
    def __init__(self, url: str, token: str, *, timeout: float = TIMEOUT, sleep=time.sleep):
        self.url, self.token, self.timeout, self.sleep = url.rstrip("/"), token, timeout, sleep

    def absolute(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.url + (path if path.startswith("/") else "/" + path)

    def request(self, method: str, path: str, *, body=None, params=None) -> dict | list | None:
        url = self.absolute(path)
        if params:
            query = urllib.parse.urlencode([(k, v) for k, v in _pairs(params) if v is not None], doseq=True)
            url += ("&" if "?" in url else "?") + query
        data = None if body is None else json.dumps(body).encode()
        for attempt in range(RETRIES + 1):
            request = urllib.request.Request(url, data=data, method=method, headers=self._headers(data is not None))
            try:
                # Reviewed: the URL is the portal's own address, which config.load accepts only as http(s).
                with urllib.request.urlopen(request, timeout=self.timeout) as response:  # nosec B310
                    raw = response.read()
                    return json.loads(raw) if raw else None
            except urllib.error.HTTPError as exc:
                raw = exc.read()
                if exc.code == 429 and attempt < RETRIES:
                    self.sleep(_retry_after(exc.headers.get("Retry-After")))
                    continue
                raise ApiError(exc.code, _problem(exc.code, raw), method=method, path=path) from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ApiError(0, {"title": f"cannot reach {self.url}: {reason}"}, method=method, path=path) from None
        raise AssertionError("unreachable")

    def get(self, path, **params):
        return self.request("GET", path, params=params or None)

    def post(self, path, body=None):
        return self.request("POST", path, body=body if body is not None else {})

    def each(self, path, *, limit: int | None = None, **params):
        """Every item of a list endpoint, following its cursor (`next`, sent back as `cursor`) page by page."""
        page = self.get(path, **params)
        seen = 0
        while True:
            items = page.get("items", []) if isinstance(page, dict) else page
            for item in items:
                yield item
                seen += 1
                if limit is not None and seen >= limit:
                    return
            cursor = page.get("next") if isinstance(page, dict) else None
            if not cursor:
                return
            page = self.get(path, **{**params, "cursor": cursor})

    def _headers(self, has_body: bool) -> dict:
        headers = {"Accept": "application/json, application/problem+json", "User-Agent": USER_AGENT}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if has_body:
            headers["Content-Type"] = "application/json"
        return headers


def _pairs(params):
    for key, value in params.items():
        if isinstance(value, (list, tuple)):
            for one in value:
                yield key, one
        else:
            yield key, value


def _retry_after(value) -> float:
    try:
        return min(max(float(value), 1.0), RETRY_AFTER_MAX)
    except (TypeError, ValueError):
        return 5.0


def _problem(status: int, raw: bytes) -> dict:
    try:
        problem = json.loads(raw)
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        text = raw.decode("utf-8", "replace").strip()
        problem = {"title": f"HTTP {status}", "detail": text[:300] if text and "<html" not in text.lower() else ""}
    if "detail" not in problem and "error" in problem:  # the older hand-written views
        problem["detail"] = problem["error"]
    return problem
