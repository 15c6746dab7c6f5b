"""One websocket message to many sockets of this process, framed once: what the run log hub sends every batch with.

A consumer's `send` goes through Channels, daphne's reply path and autobahn's framing, once per socket: with hundreds
of sockets watching one run, the web process spent most of its time framing the same text again for each
(bench/README.md, "logs"). autobahn, under daphne, has a broadcast path of its own: a `PreparedMessage` holds the frame
(made once) and `sendPreparedMessage` writes it to a socket's transport as it is. This module is the one place that
knows daphne's insides for it:

- `with_prepared_sends(app)` wraps the websocket application outermost (portal/asgi.py). Under daphne the `send` an
  application gets is `partial(server.handle_reply, protocol)`; the wrapper puts a `PreparedSender` for that protocol
  in the scope under SCOPE_KEY. Under any other server, or a test's communicator, it puts nothing and consumers send
  through Channels as before.
- `prepare(text)` frames a text message once; `PreparedSender.send(prepared)` writes it to one socket, in order with
  the socket's other messages (both end in the same transport, synchronously), and says False when the socket is no
  longer open (the caller drops it as it would a failed send).
"""

from __future__ import annotations

import functools

from autobahn.websocket.protocol import PreparedMessage, WebSocketProtocol

SCOPE_KEY = "portal.prepared_sender"


def prepare(text: str) -> PreparedMessage:
    """A text message framed once (a server's frames are not masked), to send on any number of sockets."""
    return PreparedMessage(text.encode(), False, False, False)


class PreparedSender:
    """Writes prepared messages to one daphne websocket."""

    __slots__ = ("protocol",)

    def __init__(self, protocol: WebSocketProtocol):
        self.protocol = protocol

    def send(self, prepared: PreparedMessage) -> bool:
        protocol = self.protocol
        if getattr(protocol, "state", None) != WebSocketProtocol.STATE_OPEN or protocol.transport is None:
            return False
        protocol.sendPreparedMessage(prepared)
        return True


def sender_for(send) -> PreparedSender | None:
    """The prepared sender for daphne's `send` of a websocket connection, or None under anything else."""
    if isinstance(send, functools.partial) and send.args and isinstance(send.args[0], WebSocketProtocol):
        return PreparedSender(send.args[0])
    return None


def with_prepared_sends(app):
    """The websocket application `app`, with a PreparedSender in each connection's scope when daphne serves it."""

    async def application(scope, receive, send):
        sender = sender_for(send) if scope.get("type") == "websocket" else None
        if sender is not None:
            scope = {**scope, SCOPE_KEY: sender}
        return await app(scope, receive, send)

    return application
