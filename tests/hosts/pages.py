"""What the host page tests share: a host row as a poll would leave it (no SSH; `make_host`, and the `host` fixture in
tests/hosts/conftest.py), and the requests they make as a persona."""

from django.utils import timezone

from hosts.models import Host, HostState
from portal import ssh

D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64
_, HOST_KEY = ssh.generate_keypair("host")


def make_host(team, name, **fields):
    defaults = {"address": "127.0.0.1", "port": 1, "host_key": " ".join(HOST_KEY.split()[:2]),
                "state": HostState.UP_TO_DATE, "is_bootc": True, "booted_digest": D1, "booted_version": "1.0",
                "rollback_digest": D2, "status_at": timezone.now(),
                "status": {"booted": {"image": {"image": "r/x:prod", "digest": D1, "version": "1.0"}}}}
    defaults.update(fields)
    return Host.objects.create(team=team, name=name, **defaults)




def get(client_for, user, url, **kwargs):
    return client_for(user).get(url, **kwargs)


def post(client_for, user, url, data=None):
    return client_for(user).post(url, data or {})


def is_login(response):
    return response.status_code == 302 and response["Location"].startswith("/login/")
