"""A log batch is framed once for every socket of a run in the web process (portal/wsbroadcast.py): the frame is the
RFC 6455 text frame of the batch's JSON as a server sends it, and only daphne's sockets get a sender (anything else
sends through Channels). The hub's use of it against a real daphne is in test_logs_reliability.py and the browser
tests, whose viewers parse every frame."""

import asyncio
import functools
import struct

import pytest
from daphne.ws_protocol import WebSocketProtocol

from portal import wsbroadcast


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 300_000])
def test_a_prepared_message_is_one_unmasked_text_frame_of_the_text(size):
    text = "é" * (size // 2) + "x" * (size % 2)
    payload = text.encode()
    frame = wsbroadcast.prepare(text).payloadHybi
    assert frame[0] == 0x81  # FIN, text
    assert frame[1] & 0x80 == 0  # a server's frames are not masked
    length = frame[1] & 0x7F
    if length == 126:
        (length,), header = struct.unpack("!H", frame[2:4]), 4
    elif length == 127:
        (length,), header = struct.unpack("!Q", frame[2:10]), 10
    else:
        header = 2
    assert length == len(payload) and frame[header:] == payload


def scope_seen_by_the_app(send):
    seen = {}

    async def app(scope, receive, send):
        seen.update(scope)

    asyncio.run(wsbroadcast.with_prepared_sends(app)({"type": "websocket"}, None, send))
    return seen


def test_a_daphne_socket_gets_a_sender_for_its_own_protocol():
    protocol = WebSocketProtocol()
    send = functools.partial(lambda protocol, message: None, protocol)
    sender = scope_seen_by_the_app(send)[wsbroadcast.SCOPE_KEY]
    assert sender.protocol is protocol
    assert sender.send(wsbroadcast.prepare("{}")) is False  # not open: nothing is written


def test_any_other_server_gets_no_sender_and_sends_through_channels():
    async def send(message):
        pass

    assert wsbroadcast.SCOPE_KEY not in scope_seen_by_the_app(send)
