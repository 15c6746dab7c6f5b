"""Redis with a password, and with TLS when REDIS_URL says rediss://.

Every part of the portal that talks to Redis connects with them: Celery's broker (workers and the processes that send
tasks), channels-redis (the live log stream), the health checks, worker heartbeats and rate limits. Tested against a
real redis-server started with --requirepass, and with --tls-port (Debian's redis-server is built with TLS), its
certificate signed by a CA of the test's own that REDIS_CA_FILE names.
"""

import json
import shutil
import signal
import subprocess
import sys
import urllib.request

import pytest
import redis
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from portal import health, ratelimit, workers
from tests.helpers import free_port, require_tool, wait_for
from tests.plugins.processes import PortalProcess, subprocess_env
from tests.plugins.redis_server import _forget_broker_connections, _point_portal_at_redis
from tests.tls import write_tls_files

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PASSWORD = "s3cret-redis-pw"


class SecuredRedis:
    def __init__(self, directory, *, tls):
        require_tool("redis-server")
        self.port = free_port()
        args = [shutil.which("redis-server"), "--bind", "127.0.0.1", "--requirepass", PASSWORD, "--save", "",
                "--appendonly", "no", "--dir", str(directory)]
        self.ca_file = ""
        if tls:
            files = write_tls_files(directory)
            self.ca_file = str(files["ca"])
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(files["cert"]),
                     "--tls-key-file", str(files["key"]), "--tls-ca-cert-file", self.ca_file, "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        self.url = f"{'rediss' if tls else 'redis'}://:{PASSWORD}@127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.env = {"REDIS_URL": self.url, "REDIS_CA_FILE": self.ca_file}

    def answers(self):
        from portal.environment import redis_tls_options

        try:
            return redis.Redis.from_url(self.url, socket_timeout=1, **redis_tls_options(self.url, self.ca_file)).ping()
        except redis.RedisError:
            return False

    def stop(self):
        self.process.terminate()
        return self.process.communicate(timeout=10)[0].decode(errors="replace")


@pytest.fixture(params=["password", "password-and-tls"])
def secured_redis(request, tmp_path, redis_server):
    server = SecuredRedis(tmp_path, tls=request.param == "password-and-tls")
    try:
        wait_for(server.answers, timeout=20, what="the secured redis-server to answer")
        _point_portal_at_redis(server.url, server.ca_file)
        _forget_broker_connections()
        yield server
    finally:
        _point_portal_at_redis(redis_server.url)
        _forget_broker_connections()
        server.stop()


def fetch_json(url, token):
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return None, {}  # not listening yet


def test_every_redis_client_of_the_portal_connects_with_the_password_and_tls(secured_redis, start_worker, tmp_path,
                                                                            settings):
    # The server really asks: without the password it refuses.
    bare = secured_redis.url.replace(f":{PASSWORD}@", "")
    from portal.environment import redis_tls_options

    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(bare, socket_timeout=2, **redis_tls_options(bare, secured_redis.ca_file)).ping()

    # web: the health checks (Redis, the broker through Celery's own connection, the heartbeats it reads). Started
    # first, it imports the portal while the worker does.
    port = free_port()
    web = PortalProcess("web", [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
                                "portal.asgi:application"],
                        subprocess_env(secured_redis.url, HEALTH_TOKEN="t0ken", **secured_redis.env), tmp_path)
    try:
        # A worker: its broker connection and its heartbeat.
        worker = start_worker(queues="default", concurrency=1, **secured_redis.env)
        wait_for(lambda: fetch_json(f"http://127.0.0.1:{port}/health/", "t0ken")[0] == 200, timeout=60,
                 what="web's health")
        body = fetch_json(f"http://127.0.0.1:{port}/health/", "t0ken")[1]
        assert {name: check["ok"] for name, check in body["checks"].items()} == {
            "database": True, "redis": True, "broker": True, "workers": True}, body
        assert PASSWORD not in json.dumps(body)
        assert body["checks"]["broker"]["detail"].startswith("rediss://" if secured_redis.ca_file else "redis://")

        # A task sent by this process reaches the worker through the broker.
        from portal.tasks import reap_stale_runs

        reap_stale_runs.delay()
        wait_for(lambda: "portal.tasks.reap_stale_runs[" in worker.output() and " succeeded in " in worker.output(),
                 timeout=60, what="the worker to run the task")
        # The channel layer (the live log stream rides it).
        layer = get_channel_layer()
        channel = async_to_sync(layer.new_channel)()
        async_to_sync(layer.send)(channel, {"type": "log.lines", "text": "hello"})
        assert async_to_sync(layer.receive)(channel)["text"] == "hello"
        # Rate limits count in the same Redis.
        rate = ratelimit.parse_rate("2/m")
        assert [ratelimit.hit("test", "client", rate) for _ in range(3)][:2] == [0, 0]
        assert ratelimit.hit("test", "client", rate) > 0
        assert [w.name for w in workers.alive()] and health.redis().ok and health.broker().ok
        assert PASSWORD not in web.output() + worker.output()
    finally:
        web.stop(signal.SIGKILL)  # the test is over: no need to wait seconds for daphne's orderly exit


def test_a_wrong_password_is_a_failed_check_that_does_not_show_the_password(secured_redis, settings):
    settings.REDIS_URL = secured_redis.url.replace(PASSWORD, "wrong-password")
    check = health.redis()
    assert not check.ok and "invalid username-password pair" in check.detail.lower()
    assert "wrong-password" not in check.detail
