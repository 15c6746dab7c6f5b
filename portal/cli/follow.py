"""Following a run's live log over the portal's websocket (`/ws/runs/<id>/`), as the browser's viewer does.

The token goes in the `Authorization` header of the websocket handshake, never in the URL: a query string lands in
the web server's and any proxy's access log, a header does not. The handshake also carries an `Origin` of the portal's
own address, which the portal's origin check expects of every websocket.

The socket sends stored lines after `?after=<seq>`, then live batches, then the final status; a dropped connection is
resumed with the last sequence number seen, so no line is printed twice or lost. Lines older than the socket's backlog
limit come as a "skip"; they are printed as a note with the log's address, not fetched.
"""

import json
import time
import urllib.parse

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.sync.client import connect

from . import exits
from .client import ApiError

RECONNECTS = 5
CLOSE_CODES = {
    4401: (401, "the token was refused (missing, revoked or expired)"),
    4403: (403, "your token's user may not read this run"),
    4404: (404, "no such run (or one of another team)"),
    4400: (400, "the portal refused the request"),
}
CLOSE_TOO_MANY = 4429


class FollowTimeout(Exception):
    pass


def socket_url(base: str, run_id: int, after: int) -> str:
    parts = urllib.parse.urlsplit(base)
    scheme = "wss" if parts.scheme == "https" else "ws"
    path = parts.path.rstrip("/") + f"/ws/runs/{int(run_id)}/"
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, f"after={int(after)}", ""))


def origin_of(base: str) -> str:
    parts = urllib.parse.urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}"


def follow(client, run_id: int, *, on_lines, on_note=lambda text: None, after: int = 0, deadline: float | None = None,
           poll=None) -> dict:
    """Print the run's log through `on_lines(first_seq, lines)` until the run finishes; returns the final status message
    ({"status": ..., "finished": true, ...}). Raises ApiError for a refused socket, FollowTimeout at `deadline`
    (time.monotonic()). `poll()` returns the run's status dict over HTTP: used when the portal refuses another socket
    for the user (too many open), and to tell an ended run after repeated disconnects."""
    last = after
    failures = 0
    while True:
        try:
            with connect(socket_url(client.url, run_id, last), origin=origin_of(client.url),
                         additional_headers={"Authorization": f"Bearer {client.token}"},
                         user_agent_header="imp (image-mode-portal CLI)", open_timeout=15, ping_interval=20,
                         max_size=16 * 1024 * 1024, proxy=None) as socket:
                failures = 0
                while True:
                    timeout = None if deadline is None else max(deadline - time.monotonic(), 0)
                    if timeout == 0:
                        raise FollowTimeout
                    try:
                        raw = socket.recv(timeout=timeout)
                    except TimeoutError:
                        raise FollowTimeout from None
                    message = json.loads(raw)
                    kind = message.get("t")
                    if kind == "lines":
                        first = message["first"]
                        lines = message["lines"]
                        new = lines[max(last + 1 - first, 0):]
                        if new:
                            on_lines(max(first, last + 1), new)
                            last = first + len(lines) - 1
                    elif kind == "skip":
                        on_note(f"[lines {message['from']}..{message['to']} not shown: "
                                f"{client.absolute(f'/runs/{run_id}/log.txt')} has the whole log]")
                        last = max(last, message["to"])
                    elif kind == "status" and message.get("finished"):
                        return message
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd else None
            if code in CLOSE_CODES:
                status, text = CLOSE_CODES[code]
                reason = exc.rcvd.reason or text
                raise ApiError(status, {"title": reason}, method="WS", path=f"/ws/runs/{run_id}/") from None
            if code == CLOSE_TOO_MANY and poll is not None:
                on_note("[the portal has too many live logs open for this user: waiting without the log]")
                return _poll_until_finished(poll, deadline)
            failures += 1
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status in (401, 403, 404):
                raise ApiError(status, {"title": f"the portal refused the log socket (HTTP {status})"},
                               method="WS", path=f"/ws/runs/{run_id}/") from None
            failures += 1
        except (OSError, InvalidHandshake, TimeoutError):
            failures += 1
        if failures > RECONNECTS:
            raise ApiError(0, {"title": f"lost the log socket of run {run_id} {failures} times"}, method="WS")
        if poll is not None:
            status = poll()
            if status.get("finished"):
                return status
        time.sleep(min(2 ** failures, 15))


def _poll_until_finished(poll, deadline, interval: float = 3.0) -> dict:
    while True:
        status = poll()
        if status.get("finished"):
            return status
        if deadline is not None and time.monotonic() >= deadline:
            raise FollowTimeout
        time.sleep(interval)


__all__ = ["follow", "FollowTimeout", "socket_url", "exits"]
