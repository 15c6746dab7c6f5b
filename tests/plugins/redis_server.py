"""A real Redis of the suite's own (broker and channel layer), which a test may stop and start again."""

import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.conf import settings

from tests.helpers import wait_for


class RedisServer:
    """A real redis-server on a unix socket of the suite's own, so tests never touch anyone's 6379 and can restart it."""

    def __init__(self, directory):
        self.directory = Path(directory)
        self.socket = self.directory / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.binary = shutil.which("redis-server") or self._embedded()
        self.process = None

    @staticmethod
    def _embedded():
        from portal.demo.management.commands.run_portal import embedded_redis_server

        return embedded_redis_server()

    def start(self):
        self.socket.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [self.binary, "--port", "0", "--unixsocket", str(self.socket), "--unixsocketperm", "700", "--save", "",
             "--appendonly", "no", "--dir", str(self.directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, what="redis to answer")

    def _answers(self):
        import redis

        try:
            return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1).ping()
        except redis.RedisError:
            return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def restart(self):
        self.stop()
        self.start()
        _forget_broker_connections()


@pytest.fixture(scope="session", autouse=True)
def redis_server():
    directory = tempfile.mkdtemp(prefix="portal-redis-")
    server = RedisServer(directory)
    server.start()
    _point_portal_at_redis(server.url)
    yield server
    server.stop()
    shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def broker_stopped(redis_server):
    """The suite's Redis (broker and channel layer) is down inside the block, and back, with fresh connections, after."""
    redis_server.stop()
    try:
        yield
    finally:
        redis_server.start()
        _forget_broker_connections()


def _forget_broker_connections():
    """The test process's pooled broker connections died with the old server: drop them (as Celery does after a fork),
    so the next publish or control call (start_worker's ping) connects again instead of failing on a broken pipe."""
    from kombu import pools

    from portal.celery import app

    pools.reset()
    app._after_fork()


def _point_portal_at_redis(url, ca_file=""):
    """Every Redis client of the test process (settings, Channels, Celery) at `url`, as settings.py would make them."""
    from channels.layers import channel_layers

    from portal.celery import app
    from portal.environment import celery_broker_url, celery_broker_use_ssl, channel_layer_hosts

    settings.REDIS_URL, settings.REDIS_CA_FILE = url, ca_file
    settings.CHANNEL_LAYERS["default"]["CONFIG"]["hosts"] = channel_layer_hosts(url, ca_file)
    channel_layers.backends.clear()
    app.conf.broker_url = celery_broker_url(url)
    app.conf.broker_use_ssl = celery_broker_use_ssl(url, ca_file)
