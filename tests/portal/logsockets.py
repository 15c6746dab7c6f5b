"""Talking to the run log websocket in tests (tests/portal/test_consumer*.py): a communicator for a run as a user,
reading messages up to a status or a condition, the line numbers and texts they carry, a handshake's close code, a
run with stored lines, and a browser's session cookie."""


from channels.testing import WebsocketCommunicator

from portal import logsink, services
from portal.asgi import application
from portal.models import RunKind


def communicator(run_id, user=None, after=None):
    path = f"/ws/runs/{run_id}/" + (f"?after={after}" if after is not None else "")
    comm = WebsocketCommunicator(application, path, headers=[(b"origin", b"http://127.0.0.1"), (b"host", b"127.0.0.1")])
    if user is not None:
        comm.scope["user"] = user
    return comm


async def receive_until_status(comm, timeout=5):
    """All messages up to and including the first status message."""
    out = []
    while True:
        message = await comm.receive_json_from(timeout=timeout)
        out.append(message)
        if message["t"] == "status":
            return out


def lines_of(messages):
    seqs, texts = [], []
    for m in messages:
        if m["t"] == "lines":
            seqs.extend(range(m["first"], m["first"] + len(m["lines"])))
            texts.extend(m["lines"])
    return seqs, texts


async def close_code(comm):
    connected, _ = await comm.connect()
    assert connected
    message = await comm.receive_output(timeout=5)
    assert message["type"] == "websocket.close"
    return message["code"]


def make_run(team, lines=0, kind=RunKind.BUILD):
    run = services.run_create(kind=kind, title="ws run", team=team)
    services.run_start(run)
    sink = logsink.LogSink(run)
    for i in range(1, lines + 1):
        sink.write(f"line {i}")
    sink.flush()
    return run, sink


async def receive_until(comm, predicate, timeout=5):
    out = []
    while True:
        message = await comm.receive_json_from(timeout=timeout)
        out.append(message)
        if predicate(message):
            return out


def session_cookie(user):
    from django.test import Client

    client = Client()
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return f"sessionid={client.cookies['sessionid'].value}"
