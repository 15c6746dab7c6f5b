"""Settings of hosts and their rollouts (docs/hosts.md, docs/rollouts.md), read from the environment.

portal/settings.py takes every upper-case name here as a setting and `beat_schedule` into CELERY_BEAT_SCHEDULE. Every
variable is listed, with its default, in `.env.example`.
"""

import re

from portal.environment import BadSetting, Env

env = Env()

# --- Hosts (docs/hosts.md) -------------------------------------------------------------------------------------------
HOSTS_POLL_SECONDS = env.int("HOSTS_POLL_SECONDS", default=60)  # between two polls of a healthy host
HOSTS_POLL_CONCURRENCY = env.int("HOSTS_POLL_CONCURRENCY", default=64)  # SSH connections in flight per poll task
HOSTS_POLL_BATCH = env.int("HOSTS_POLL_BATCH", default=500)  # hosts per poll task (tasks spread over workers)
HOSTS_MAX_BACKOFF_SECONDS = env.int("HOSTS_MAX_BACKOFF_SECONDS", default=3600)  # longest pause for an unreachable host
HOSTS_CONNECT_TIMEOUT = env.float("HOSTS_CONNECT_TIMEOUT", default=5.0)
HOSTS_HANDSHAKE_TIMEOUT = env.float("HOSTS_HANDSHAKE_TIMEOUT", default=10.0)
HOSTS_AUTH_TIMEOUT = env.float("HOSTS_AUTH_TIMEOUT", default=10.0)
HOSTS_COMMAND_TIMEOUT = env.float("HOSTS_COMMAND_TIMEOUT", default=30.0)  # bootc status
HOSTS_ACTION_COMMAND_TIMEOUT = env.float("HOSTS_ACTION_COMMAND_TIMEOUT", default=1800.0)  # upgrade, switch (pulls)
HOSTS_REBOOT_WAIT_SECONDS = env.int("HOSTS_REBOOT_WAIT_SECONDS", default=600)  # how long an action waits for a reboot
HOSTS_REBOOT_POLL_SECONDS = env.float("HOSTS_REBOOT_POLL_SECONDS", default=5.0)  # between two looks at a rebooting host
HOSTS_MAX_STATUS_BYTES = env.int("HOSTS_MAX_STATUS_BYTES", default=1024 * 1024)  # output cap of bootc status
# Kept-open SSH (portal/sshpool.py): one connection per host per worker process, a new channel per command. The hosts
# worker runs with `-P threads` so that its tasks share one process and so one pool (docs/hosts.md).
HOSTS_SSH_KEEP_OPEN = env.bool("HOSTS_SSH_KEEP_OPEN", default=True)
HOSTS_SSH_POOL_MAX = env.int("HOSTS_SSH_POOL_MAX", default=15000)  # open connections (also capped by `ulimit -Hn`)
HOSTS_SSH_IDLE_SECONDS = env.float("HOSTS_SSH_IDLE_SECONDS", default=300.0)  # closed after this long unused
HOSTS_SSH_SESSIONS_PER_HOST = env.int("HOSTS_SSH_SESSIONS_PER_HOST", default=4)  # commands at once on one host
HOSTS_SSH_CONNECTS_IN_FLIGHT = env.int("HOSTS_SSH_CONNECTS_IN_FLIGHT", default=64)  # handshakes at once
HOSTS_SSH_RECONNECT_BASE_SECONDS = env.float("HOSTS_SSH_RECONNECT_BASE_SECONDS", default=1.0)  # then 2, 4, ... s
HOSTS_SSH_RECONNECT_MAX_SECONDS = env.float("HOSTS_SSH_RECONNECT_MAX_SECONDS", default=30.0)
# `bootc upgrade --check` on every host this often (metadata only), and its deadline per host.
HOSTS_UPDATE_CHECK_SECONDS = env.int("HOSTS_UPDATE_CHECK_SECONDS", default=6 * 3600)
HOSTS_UPDATE_CHECK_TIMEOUT = env.float("HOSTS_UPDATE_CHECK_TIMEOUT", default=120.0)
# Hosts that report in (docs/report-in.md): the agent's requests per host, enrollments per client address, and how
# often the hosts seen with an unchanged status are written (one UPDATE for all of them).
HOSTS_AGENT_RATE_LIMIT_PER_HOST = env.str("HOSTS_AGENT_RATE_LIMIT_PER_HOST", default="120/m")
HOSTS_AGENT_ENROLL_RATE_LIMIT_PER_ADDRESS = env.str("HOSTS_AGENT_ENROLL_RATE_LIMIT_PER_ADDRESS", default="600/m")
HOSTS_AGENT_SEEN_FLUSH_SECONDS = env.float("HOSTS_AGENT_SEEN_FLUSH_SECONDS", default=1.0)
# Where the agents the portal hands out report to, when it is not the address the enrollment page was opened at:
# `make run`, which has no proxy, sets its machine endpoints' server here (portal.machine_server); behind the proxy,
# which routes /agent/v1/ to that server, it stays empty.
HOSTS_AGENT_URL = env.str("HOSTS_AGENT_URL", default="").rstrip("/")
if HOSTS_AGENT_URL and not re.match(r"^https?://[^/\s]+$", HOSTS_AGENT_URL):
    raise BadSetting(f"HOSTS_AGENT_URL must be an address such as https://portal.example.com (got {HOSTS_AGENT_URL!r}).")
# The report front's entries in Redis (hosts/agentcache.py) expire after this long, so a missed invalidation heals.
HOSTS_AGENT_CACHE_SECONDS = env.int("HOSTS_AGENT_CACHE_SECONDS", default=3600)
# A host that reports in is offline after this many report intervals without a report; online/offline changes within
# HOSTS_FLAP_WINDOW_SECONDS of the last one are folded into one timeline event with a count.
HOSTS_AGENT_REPORT_SECONDS = env.int("HOSTS_AGENT_REPORT_SECONDS", default=60)
HOSTS_AGENT_OFFLINE_AFTER_MISSED = env.int("HOSTS_AGENT_OFFLINE_AFTER_MISSED", default=3)
HOSTS_FLAP_WINDOW_SECONDS = env.int("HOSTS_FLAP_WINDOW_SECONDS", default=3600)
RUNTIME_READ_HOURS = env.float("RUNTIME_READ_HOURS", default=1.0)  # between two readings of what changed on a host
beat_schedule = {
    "hosts-poll-due": {"task": "hosts.tasks.poll_due_hosts", "schedule": 15.0},
    "hosts-runtime-due": {"task": "hosts.tasks.runtime_read_due", "schedule": 300.0},
    "hosts-agent-seen-flush": {"task": "hosts.tasks.agent_seen_flush", "schedule": 10.0},
    "hosts-agent-offline": {"task": "hosts.tasks.agent_offline_sweep", "schedule": 30.0},
    "hosts-refresh-references": {"task": "hosts.tasks.refresh_reference_digests", "schedule": 60.0},
    "hosts-tallies-compact": {"task": "hosts.tasks.tallies_compact", "schedule": 60.0},
    "rollouts-resume-orphans": {"task": "hosts.rollouts.tasks.rollouts_resume_orphans", "schedule": 60.0},
    "rollouts-wake-due": {"task": "hosts.rollouts.tasks.rollouts_wake_due", "schedule": 60.0},
    "hosts-check-updates": {"task": "hosts.tasks.check_updates_due", "schedule": float(HOSTS_UPDATE_CHECK_SECONDS)},
}
# Rollouts (docs/rollouts.md): how often the engine looks at its hosts, and how many it talks to at once.
ROLLOUTS_TICK_SECONDS = env.float("ROLLOUTS_TICK_SECONDS", default=2.0)
ROLLOUTS_CONCURRENCY = env.int("ROLLOUTS_CONCURRENCY", default=32)
ROLLOUTS_REBOOT_WAIT_SECONDS = env.int("ROLLOUTS_REBOOT_WAIT_SECONDS", default=HOSTS_REBOOT_WAIT_SECONDS)
ROLLOUTS_MIN_FREE_BYTES = env.int("ROLLOUTS_MIN_FREE_BYTES", default=1024 ** 3)  # free on /sysroot (pre-flight)
# A rollout that can only wait longer than this (a soak time, a maintenance window, a pause) parks: no worker is held,
# and a countdown task (beat's rollouts_wake_due should it be lost) takes it up again, at the latest after the maximum.
ROLLOUTS_PARK_AFTER_SECONDS = env.float("ROLLOUTS_PARK_AFTER_SECONDS", default=30.0)
ROLLOUTS_PARK_MAX_SECONDS = env.float("ROLLOUTS_PARK_MAX_SECONDS", default=1800.0)
