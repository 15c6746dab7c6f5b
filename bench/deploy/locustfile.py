"""Viewers of a team with 10,000 hosts, reading the pages people keep open: the dashboard, the host list (first, deep
and filtered pages) and the fleet view. Run by bench/deploy/bench.py; every setting comes from the environment:
BENCH_CA (the proxy's CA, to verify TLS), BENCH_WAIT ("1-3": each user waits 1 to 3 s
between pages; "0": no wait), BENCH_SESSIONS (session keys of signed-in viewers, comma-separated),
BENCH_FORWARDED_PROTO (set when talking to daphne directly, as the proxy would), BENCH_WITHOUT_FLEET_VIEW (leave that
page out)."""

import itertools
import os
import random

from locust import HttpUser, between, constant, task
from pages import PAGES  # locust puts this file's directory on sys.path

if os.environ.get("BENCH_WITHOUT_FLEET_VIEW"):
    PAGES = {name: path for name, path in PAGES.items() if name != "fleet view"}
SESSIONS = os.environ.get("BENCH_SESSIONS", "").split(",")
_user_numbers = itertools.count()


class Viewer(HttpUser):
    wait_time = between(1, 3) if os.environ.get("BENCH_WAIT", "1-3") == "1-3" else constant(0)

    def on_start(self):
        self.client.verify = os.environ.get("BENCH_CA") or True
        if os.environ.get("BENCH_FORWARDED_PROTO"):
            self.client.headers["X-Forwarded-Proto"] = os.environ["BENCH_FORWARDED_PROTO"]
        # Each user is a viewer already signed in (a session made for the run): signing in 50 users at once would
        # measure the password hasher. The cookie is sent by hand, since requests keeps Secure cookies off plain HTTP.
        self.client.headers["Cookie"] = f"sessionid={SESSIONS[next(_user_numbers) % len(SESSIONS)]}"

    @task
    def read_a_page(self):
        name, path = random.choice(list(PAGES.items()))
        with self.client.get(path, name=name, allow_redirects=False, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"{response.status_code}")
