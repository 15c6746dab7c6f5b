"""Settings for Image Mode Portal, read from the environment.

Every variable is listed, with its default, in `.env.example`. The defaults work on a laptop (`make run`): SQLite under var/,
the embedded Redis on a unix socket under var/, the local registry on 127.0.0.1:5000 and keys generated into var/. With
DEBUG off the portal refuses to start unless SECRET_KEY, FIELD_ENCRYPTION_KEYS and AUDIT_HMAC_KEY are set.
"""

import os
import re
from datetime import timedelta
from pathlib import Path

import environ
from csp.constants import NONCE

from portal.egress import parse_rule as egress_rule
from portal.environment import (
    BadSetting,
    Env,
    celery_broker_url,
    celery_broker_use_ssl,
    channel_layer_hosts,
    check_networks,
    database,
    oidc_group_mapping,
    oidc_settings,
    required_secret,
    settings_in,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(environ.Env().str("PORTAL_VAR_DIR", default=str(BASE_DIR / "var")))
env = Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=True)


def _required_secret(name):
    return required_secret(env, name, debug=DEBUG, var_dir=VAR_DIR)


SECRET_KEY = _required_secret("SECRET_KEY")
# Fernet keys for secrets stored in the database, comma-separated, newest first. Older keys still decrypt, so a key is
# rotated by putting a new one in front and running `manage.py rotate_secrets`.
FIELD_ENCRYPTION_KEYS = [k.strip() for k in _required_secret("FIELD_ENCRYPTION_KEYS").split(",") if k.strip()]
# The key of the audit trail's HMAC chain (docs/security.md#audit-trail). Kept outside the database, so that someone
# who can write the database cannot recompute the chain after changing it. Changing it breaks verification of every
# event recorded under the old key.
AUDIT_HMAC_KEY = _required_secret("AUDIT_HMAC_KEY")
# Where the head of the chain is checkpointed (a file, appended to): somewhere the database's users cannot write, so that
# `audit_verify` also finds events deleted from the end. Every AUDIT_CHECKPOINT_SECONDS, by beat.
AUDIT_CHECKPOINT_PATH = Path(env.str("AUDIT_CHECKPOINT_PATH", default=str(VAR_DIR / "audit-checkpoints.jsonl")))
AUDIT_CHECKPOINT_SECONDS = env.int("AUDIT_CHECKPOINT_SECONDS", default=300)

# The reverse proxies in front of the portal (addresses or CIDRs). Only a request whose peer is one of them may name
# the client in X-Forwarded-For; see portal/clientip.py. Empty: the peer is the client.
TRUSTED_PROXIES = check_networks("TRUSTED_PROXIES", env.list("TRUSTED_PROXIES", default=[]))
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000")
if not re.match(r"^https?://[^/\s]+", SITE_URL):
    raise BadSetting(f"SITE_URL must be the address people use, e.g. https://portal.example.com (got {SITE_URL!r}).")

# Not "daphne": its app only swaps `runserver` for its own, and importing it loads Twisted and Autobahn into every
# process (a second of CPU for each worker, beat and manage.py command); web runs daphne itself (make run, compose).
INSTALLED_APPS = [
    "portal.apps.PortalAdminConfig",  # django.contrib.admin, every change audited (portal/admin.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "channels",
    "django_htmx",
    "crispy_forms",
    "crispy_bootstrap5",
    "django_filters",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "csp",
    "django_prometheus",
    "portal",
    "builds",
    "builds.releases",
    "builds.diskimages",
    "builds.supplychain",
    "hosts",
    "hosts.rollouts",
    "portal.demo",  # make run's wiring: the one app that may import every feature
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",  # first and last: requests counted and timed
    "portal.middleware.health_probes",  # probes and /metrics skip the host check and the HTTPS redirect
    "portal.middleware.lean_paths",  # machine endpoints with their own authentication (hosts' agents) skip the rest
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",  # request.user.is_verified(): signed in with a second factor
    "portal.logcontext.request_context",  # the request id and the user on every log line (docs/operations.md#logs)
    "django.contrib.messages.middleware.MessageMiddleware",
    "portal.sessions.IdleSessionMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "portal.middleware.method_not_allowed_page",  # a page, not an empty 405, for an action URL opened in a browser
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.navigation",
                "builds.releases.context_processors.inbox",
            ],
        },
    },
]

# --- Database --------------------------------------------------------------------------------------------------------
# SQLite under var/ when DATABASE_URL is unset; on PostgreSQL psycopg's pool, one per process (portal/environment.py).
DATABASES = {"default": database(env, var_dir=VAR_DIR, pid=os.getpid())}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# How many HTTP requests one web process works on at once; the others wait their turn in its event loop. Under ASGI
# every request's view runs in a thread of its own, so without a bound a burst of slow pages starts more threads than
# the pool has connections, and those past the pool's timeout fail. With the pool on it defaults to the pool's size,
# so a request that starts always finds a connection; websockets and /health/live are not counted.
WEB_CONCURRENT_REQUESTS = env.int("WEB_CONCURRENT_REQUESTS",
                                  default=DATABASES["default"].get("OPTIONS", {}).get("pool", {}).get("max_size", 16))
if WEB_CONCURRENT_REQUESTS < 1:
    raise BadSetting(f"WEB_CONCURRENT_REQUESTS ({WEB_CONCURRENT_REQUESTS}) must be at least 1.")

# --- Redis: Celery broker and Channels layer -------------------------------------------------------------------------
EMBEDDED_REDIS_SOCKET = VAR_DIR / "redis.sock"
REDIS_URL = env.str("REDIS_URL", default=f"unix://{EMBEDDED_REDIS_SOCKET}")
if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise BadSetting("REDIS_URL must start with redis://, rediss:// (TLS) or unix://, e.g. redis://:PASSWORD@redis:6379/0.")

# A password goes in the URL (redis://:PASSWORD@host:6379/0); rediss:// means TLS, with the server's certificate verified
# against REDIS_CA_FILE (default: the system's CAs). Celery, channels-redis and the portal's own clients all read both.
REDIS_CA_FILE = env.str("REDIS_CA_FILE", default="")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "portal.live.RedisChannelLayer",  # channels-redis, riding out Redis restarts
        "CONFIG": {"hosts": channel_layer_hosts(REDIS_URL, REDIS_CA_FILE), "capacity": 1000, "expiry": 30},
    }
}

# Celery. The reasons behind each choice are in docs/workers.md; tests/portal/test_workers.py reads them back.
CELERY_BROKER_URL = celery_broker_url(REDIS_URL)
CELERY_BROKER_USE_SSL = celery_broker_use_ssl(REDIS_URL, REDIS_CA_FILE)
CELERY_RESULT_BACKEND = None  # the UI reads run rows, never Celery results
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=4 * 3600)
CELERY_TASK_SOFT_TIME_LIMIT = CELERY_TASK_TIME_LIMIT - 60
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Must exceed the longest task: Redis hands an unacknowledged task to another worker after this long.
    "visibility_timeout": CELERY_TASK_TIME_LIMIT + 3600,
    "socket_timeout": 10,
    "socket_connect_timeout": 5,
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "default"
# Builds and conversions are sent to their builder's queue by name (builds/queues.py, docs/workers.md).
CELERY_TASK_ROUTES = {"hosts.tasks.*": {"queue": "hosts"}, "hosts.rollouts.tasks.*": {"queue": "hosts"}}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Each worker writes a heartbeat to Redis this often (portal/workers.py); it counts as gone after three missed beats.
WORKER_HEARTBEAT_SECONDS = env.float("WORKER_HEARTBEAT_SECONDS", default=10)
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE = {
    "reap-stale-runs": {"task": "portal.tasks.reap_stale_runs", "schedule": 60.0},
    "audit-checkpoint": {"task": "portal.tasks.audit_checkpoint", "schedule": float(AUDIT_CHECKPOINT_SECONDS)},
    "builds-schedule-due": {"task": "builds.tasks.builds_schedule_due", "schedule": 300.0},
    "builders-check-health": {"task": "builds.tasks.build_check_builders_health", "schedule": 600.0},
    "builders-prune": {"task": "builds.tasks.builders_prune", "schedule": 3600.0},
    "manifest-lists-settle": {"task": "builds.tasks.manifest_lists_settle", "schedule": 60.0},
}

# --- Runs and logs ---------------------------------------------------------------------------------------------------
RUN_LOG_BATCH_LINES = env.int("RUN_LOG_BATCH_LINES", default=500)
# 25 ms: a line reaches viewers within about 25 ms plus delivery (bench/README.md#logs); at most 40 INSERTs a second per run.
RUN_LOG_BATCH_SECONDS = env.float("RUN_LOG_BATCH_SECONDS", default=0.025)
RUN_LOG_CHUNK_BYTES = env.int("RUN_LOG_CHUNK_BYTES", default=256 * 1024)
# A stored line is cut at this many characters (with a note); the viewer shows lines up to the display limit and
# offers the rest behind an "expand" link. See docs/logs.md.
RUN_LOG_LINE_MAX_CHARS = env.int("RUN_LOG_LINE_MAX_CHARS", default=256 * 1024)
RUN_LOG_DISPLAY_LINE_CHARS = env.int("RUN_LOG_DISPLAY_LINE_CHARS", default=64 * 1024)
# The most a worker keeps in memory of a command's captured output (JSON from skopeo, the package list, ...): a
# command that prints more is stopped and fails with the reason.
RUNNER_CAPTURE_MAX_BYTES = env.int("RUNNER_CAPTURE_MAX_BYTES", default=64 * 1024 * 1024)
RUN_HEARTBEAT_SECONDS = env.float("RUN_HEARTBEAT_SECONDS", default=10)
# A running run whose worker has not beaten for this long is failed by the reaper.
RUN_STALE_AFTER = timedelta(seconds=env.int("RUN_STALE_AFTER_SECONDS", default=120))
# A queued run that no worker picked up for this long is failed too (the queue or its workers are gone).
RUN_QUEUED_EXPIRES_AFTER = timedelta(seconds=env.int("RUN_QUEUED_EXPIRES_AFTER_SECONDS", default=24 * 3600))

# --- Auth ------------------------------------------------------------------------------------------------------------
AUTH_USER_MODEL = "portal.User"
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
# Single sign-on with OpenID Connect (mozilla-django-oidc; portal/sso.py, docs/sso.md), beside local accounts: on when
# OIDC_RP_CLIENT_ID is set, with the provider's endpoints. Local accounts (the break-glass admin) always sign in.
OIDC = oidc_settings(env)
SSO_ENABLED = bool(OIDC)
globals().update(OIDC)
SSO_PROVIDER_NAME = env.str("SSO_PROVIDER_NAME", default="single sign-on")  # "Sign in with <this>"
OIDC_RP_SIGN_ALGO = env.str("OIDC_RP_SIGN_ALGO", default="RS256")
OIDC_RP_SCOPES = env.str("OIDC_RP_SCOPES", default="openid email profile")
OIDC_USE_PKCE = env.bool("OIDC_USE_PKCE", default=True)
OIDC_TIMEOUT = env.int("OIDC_TIMEOUT_SECONDS", default=10)
OIDC_CREATE_USER = env.bool("OIDC_CREATE_USER", default=True)  # the first sign-in makes the account
OIDC_USERNAME_CLAIM = env.str("OIDC_USERNAME_CLAIM", default="preferred_username")
OIDC_GROUPS_CLAIM = env.str("OIDC_GROUPS_CLAIM", default="groups")
# {"group": {"team slug": "role"}}; the admin site's identity group mappings add to these.
OIDC_GROUP_MAPPING = oidc_group_mapping(env.str("OIDC_GROUP_MAPPING", default=""))
OIDC_AUTHENTICATION_CALLBACK_URL = "portal:sso_callback"
if SSO_ENABLED:
    AUTHENTICATION_BACKENDS.append("portal.sso.PortalOIDCBackend")
LOGIN_URL = "portal:login"
LOGIN_REDIRECT_URL = "portal:dashboard"
LOGOUT_REDIRECT_URL = "portal:login"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Login throttling (django-axes, with portal.login.LoginThrottle): failures are counted per client address and per
# username, separately, each against its own limit; a lock lasts AXES_COOLOFF_MINUTES. docs/security.md#login-and-sessions.
LOGIN_FAILURES_PER_ADDRESS = env.int("LOGIN_FAILURES_PER_ADDRESS", default=20)
LOGIN_FAILURES_PER_USER = env.int("LOGIN_FAILURES_PER_USER", default=5)
# A browser that signed in as a user within this many days is exempt from that user's lock (not its address's).
LOGIN_KNOWN_BROWSER_DAYS = env.int("LOGIN_KNOWN_BROWSER_DAYS", default=90)
AXES_HANDLER = "portal.login.LoginThrottle"
AXES_FAILURE_LIMIT = LOGIN_FAILURES_PER_USER
AXES_LOCK_OUT_AT_FAILURE = False  # LoginThrottle decides, from its two counters
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", "username"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "portal.login.lockout_response"
AXES_CLIENT_IP_CALLABLE = "portal.clientip.throttle_address"  # IPv6 counted per /64
AXES_VERBOSE = False

# Rate limits of the JSON API and the git webhooks (portal/ratelimit.py): COUNT/UNIT, units s, m, h, d. Over the limit:
# HTTP 429 with Retry-After. Per token (or webhook) and per client address, whichever is reached first.
API_RATE_LIMIT_PER_TOKEN = env.str("API_RATE_LIMIT_PER_TOKEN", default="120/m")
API_RATE_LIMIT_PER_ADDRESS = env.str("API_RATE_LIMIT_PER_ADDRESS", default="300/m")
WEBHOOK_RATE_LIMIT_PER_HOOK = env.str("WEBHOOK_RATE_LIMIT_PER_HOOK", default="60/m")
# Git hosts send every customer's webhooks from a few addresses: keep this one generous.
WEBHOOK_RATE_LIMIT_PER_ADDRESS = env.str("WEBHOOK_RATE_LIMIT_PER_ADDRESS", default="600/m")
RATE_LIMIT_KEY_PREFIX = "portal:ratelimit"
# REST API tokens (docs/api.md): the longest life a new token may have (days; none: no limit), the shorter one of a
# token with the approve scope where a team requires a second factor (hours), and how often a token's use is written to
# the audit trail (its last use is noted on every request).
API_TOKEN_MAX_DAYS = env.int("API_TOKEN_MAX_DAYS", default=365)
API_TOKEN_APPROVE_MAX_HOURS = env.int("API_TOKEN_APPROVE_MAX_HOURS", default=12)
API_TOKEN_AUDIT_USE_SECONDS = env.int("API_TOKEN_AUDIT_USE_SECONDS", default=3600)
# Live log websockets one user may have open at once, over every web process (portal/sockets.py); one more is closed
# with 4429 and the viewer polls instead.
RUN_LOG_SOCKETS_PER_USER = env.int("RUN_LOG_SOCKETS_PER_USER", default=20)
# How often the log viewer asks for new lines when it cannot follow the log over a websocket (a proxy that blocks
# websockets, a server restarting, too many live logs open).
RUN_LOG_POLL_SECONDS = env.float("RUN_LOG_POLL_SECONDS", default=2.0)
if not RUN_LOG_POLL_SECONDS > 0:
    raise BadSetting(f"RUN_LOG_POLL_SECONDS ({RUN_LOG_POLL_SECONDS:g}) must be more than 0: the log viewer asks for new "
                     "lines that often when it cannot follow a log over a websocket (e.g. 2).")
LOG_SOCKETS_KEY_PREFIX = "portal:log-sockets"
# The explain page (portal.failures) reads at most this many characters of a pasted log; larger pastes are refused with
# a message that says so (a form past DATA_UPLOAD_MAX_MEMORY_SIZE gets the 400 page that says the same).
EXPLAIN_LOG_MAX_CHARS = env.int("EXPLAIN_LOG_MAX_CHARS", default=500_000)

# Second factor (django-otp, TOTP with backup codes): the name authenticator apps show for the portal's entry.
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", default="Image Mode Portal")

# --- Security --------------------------------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=12 * 3600)
# A session with no activity for this long is signed out (portal/sessions.py); SESSION_COOKIE_AGE ends it regardless.
SESSION_IDLE_MINUTES = env.int("SESSION_IDLE_MINUTES", default=60)
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^health/$"]
# A monitor sending `Authorization: Bearer <HEALTH_TOKEN>` gets /health/'s details (staff get them too); empty: staff only.
HEALTH_TOKEN = env.str("HEALTH_TOKEN", default="")
# The health checks' broker check connects again once, after this long, before it calls the broker down: one lost
# connection is not an outage.
HEALTH_BROKER_RETRY_SECONDS = env.float("HEALTH_BROKER_RETRY_SECONDS", default=2.0)
# /metrics (docs/operations.md#metrics): readable with `Authorization: Bearer <METRICS_TOKEN>`, or from a client
# address (as portal/clientip.py reads it) in METRICS_ALLOWED_NETWORKS. With neither set it answers 403 saying so;
# make run (DEBUG) lets loopback read it.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_NETWORKS = check_networks("METRICS_ALLOWED_NETWORKS", env.list(
    "METRICS_ALLOWED_NETWORKS", default=["127.0.0.1/32", "::1/128"] if DEBUG else []))
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=not DEBUG)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env.bool("BEHIND_TLS_PROXY", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Scripts and styles from the portal's own origin only: no inline script, no style="" and no <style> without the
# request's nonce (only the Containerfile editor asks for one, for CodeMirror's stylesheet; templates use
# classes; htmx's indicator style is off in base.html; the log viewer turns ansi_up's styles into classes). Script may
# still set element.style, which the policy allows. tests/portal/test_csp.py loads every persona's pages in Chromium.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", NONCE],  # the nonce only where a page asks for it: the editor's own stylesheet
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}

# --- Email -----------------------------------------------------------------------------------------------------------
EMAIL_CONFIG = env.email_url("EMAIL_URL", default="consolemail://" if DEBUG else "smtp://localhost:25")
vars().update(EMAIL_CONFIG)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Image Mode Portal <portal@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL

# --- Static files ----------------------------------------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=str(VAR_DIR / "media")))

# --- Object storage (docs/operations.md#object-storage) --------------------------------------------------------------
# Where disk images, their checksums and archived logs are kept: "filesystem" (MEDIA_ROOT) or "s3" (any S3-compatible
# service, through django-storages and boto3), which becomes the default STORAGES alias.
OBJECT_STORAGE = env.str("OBJECT_STORAGE", default="filesystem")
S3_BUCKET = env.str("S3_BUCKET", default="")
S3_ENDPOINT_URL = env.str("S3_ENDPOINT_URL", default="")  # empty: AWS; e.g. https://minio.internal:9000
S3_PUBLIC_ENDPOINT_URL = env.str("S3_PUBLIC_ENDPOINT_URL", default="")  # what browsers reach, if not S3_ENDPOINT_URL
S3_REGION = env.str("S3_REGION", default="us-east-1")
S3_ACCESS_KEY_ID = env.str("S3_ACCESS_KEY_ID", default="")
S3_SECRET_ACCESS_KEY = env.str("S3_SECRET_ACCESS_KEY", default="")
S3_PREFIX = env.str("S3_PREFIX", default="")  # a folder inside the bucket, e.g. "portal"
S3_ADDRESSING_STYLE = env.str("S3_ADDRESSING_STYLE", default="path")  # path (MinIO, Ceph) or virtual (AWS)
S3_PRESIGN_SECONDS = env.int("S3_PRESIGN_SECONDS", default=3600)  # how long a download link works
if OBJECT_STORAGE == "s3":
    if not S3_BUCKET:
        raise BadSetting("S3_BUCKET must be set when OBJECT_STORAGE=s3 (see docs/operations.md#object-storage).")
    if S3_ADDRESSING_STYLE not in ("path", "virtual"):
        raise BadSetting("S3_ADDRESSING_STYLE must be path or virtual.")
    for _name in ("S3_ENDPOINT_URL", "S3_PUBLIC_ENDPOINT_URL"):
        if globals()[_name] and not re.match(r"^https?://[^/\s]+", globals()[_name]):
            raise BadSetting(f"{_name} must be an http(s) URL, e.g. https://s3.example.com")
    STORAGES["default"] = {
        "BACKEND": "portal.s3storage.S3Storage",
        "OPTIONS": {
            "bucket_name": S3_BUCKET,
            "endpoint_url": S3_ENDPOINT_URL or None,
            "region_name": S3_REGION,
            "access_key": S3_ACCESS_KEY_ID or None,  # empty: boto3's own chain (instance role, AWS_* variables)
            "secret_key": S3_SECRET_ACCESS_KEY or None,
            "location": S3_PREFIX,
            "addressing_style": S3_ADDRESSING_STYLE,
            "signature_version": "s3v4",
            "file_overwrite": False,  # every name the portal writes is unique; never replace an object silently
            "default_acl": None,
            "querystring_expire": S3_PRESIGN_SECONDS,
        },
    }
elif OBJECT_STORAGE != "filesystem":
    raise BadSetting(f"OBJECT_STORAGE must be filesystem or s3, not {OBJECT_STORAGE!r}.")
# How a download reaches the client: "presigned" (a redirect to object storage), "proxy" (the proxy serves the file from
# MEDIA_ROOT itself on X-Accel-Redirect: /protected-media/<name>, deploy/Caddyfile) or "stream" (through the web process:
# make run only). Default: presigned with S3, else stream with DEBUG on and proxy in production.
DOWNLOADS_VIA = env.str("DOWNLOADS_VIA", default="presigned" if OBJECT_STORAGE == "s3" else "stream" if DEBUG else "proxy")
if DOWNLOADS_VIA not in ("presigned", "proxy", "stream"):
    raise BadSetting(f"DOWNLOADS_VIA must be presigned, proxy or stream, not {DOWNLOADS_VIA!r}.")
if DOWNLOADS_VIA == "presigned" and OBJECT_STORAGE != "s3":
    raise BadSetting("DOWNLOADS_VIA=presigned needs OBJECT_STORAGE=s3 (files on disk are served with proxy).")
if DOWNLOADS_VIA == "proxy" and OBJECT_STORAGE != "filesystem":
    raise BadSetting("DOWNLOADS_VIA=proxy serves MEDIA_ROOT from the proxy's disk; with OBJECT_STORAGE=s3 use presigned.")
if DOWNLOADS_VIA == "stream" and not DEBUG:
    raise BadSetting("DOWNLOADS_VIA=stream sends multi-gigabyte files through the web process; in production use "
                     "presigned (OBJECT_STORAGE=s3) or proxy (deploy/Caddyfile).")

# --- Registry and tools ----------------------------------------------------------------------------------------------
REGISTRY_URL = env.str("REGISTRY_URL", default="127.0.0.1:5000")
REGISTRY_INSECURE = env.bool("REGISTRY_INSECURE", default=REGISTRY_URL.startswith(("127.", "localhost")))
# Inside REGISTRY_URL a team pushes to and builds from only REGISTRY_URL/<team slug>/; these namespaces (e.g.
# "base,platform") may also be read by every team's FROM, COPY --from and RUN --mount (docs/security.md).
REGISTRY_SHARED_NAMESPACES = env.list("REGISTRY_SHARED_NAMESPACES", default=[])

# --- Egress (docs/security.md) ---------------------------------------------------------------------------------------
# What the portal may reach on someone's behalf besides public addresses and REGISTRY_URL: host names, addresses or
# CIDR blocks, each with an optional :port (e.g. "registry.internal,10.20.0.0/16,127.0.0.1:5000"). Empty: nothing
# inside the network.
EGRESS_ALLOW = env.list("EGRESS_ALLOW", default=[])
for _entry in EGRESS_ALLOW:
    try:
        egress_rule(_entry)
    except ValueError as exc:
        raise BadSetting(f"EGRESS_ALLOW: {exc} (e.g. registry.internal, 10.20.0.0/16, 127.0.0.1:5000).") from None

# --- Builds (docs/builds.md) -----------------------------------------------------------------------------------------
# podman's pull policy for base images: missing (default), always, newer or never (tests use never: nothing to pull).
BUILD_PULL_POLICY = env.str("BUILD_PULL_POLICY", default="missing")
# Bases a revision may start FROM without a warning: exact repositories, prefixes ending in "/", or patterns with * (any
# characters but "/") and ?: registry.redhat.io/rhel*/rhel-bootc is every RHEL stream (rhel9, rhel10, betas) and
# registry.redhat.io/rhel*/rhel-*-bootc the EUS streams (rhel9-eus/rhel-9.4-bootc).
BUILD_KNOWN_BASES = env.list("BUILD_KNOWN_BASES", default=[
    "quay.io/centos-bootc/", "quay.io/fedora/fedora-bootc", "registry.redhat.io/rhel*/rhel-bootc",
    "registry.redhat.io/rhel*/rhel-*-bootc", "ghcr.io/ublue-os/",
    "registry.fedoraproject.org/fedora-bootc", "quay.io/almalinuxorg/almalinux-bootc",
])
BUILD_CONTEXT_MAX_BYTES = env.int("BUILD_CONTEXT_MAX_BYTES", default=1024 * 1024)
BUILD_CONTEXT_MAX_FILES = env.int("BUILD_CONTEXT_MAX_FILES", default=50)
# URL schemes a revision's git context may use; file:// only for development and tests (it reads the worker's disk).
BUILD_GIT_URL_SCHEMES = env.list("BUILD_GIT_URL_SCHEMES", default=["https", "ssh", "git"] + (["file"] if DEBUG else []))
BUILD_SCHEDULE_HOUR = env.int("BUILD_SCHEDULE_HOUR", default=2)  # UTC hour of nightly/weekly rebuilds
BUILD_CANCEL_POLL_SECONDS = env.float("BUILD_CANCEL_POLL_SECONDS", default=1.0)
# The portal's ceiling over every definition's own time limit (which people set in minutes, 1 to 1,440): a build stops
# at whichever comes first. The reason names the one that applied.
BUILD_TIME_LIMIT_MAX_SECONDS = env.int("BUILD_TIME_LIMIT_MAX_SECONDS", default=24 * 3600)
if BUILD_TIME_LIMIT_MAX_SECONDS < 1:
    raise BadSetting(f"BUILD_TIME_LIMIT_MAX_SECONDS ({BUILD_TIME_LIMIT_MAX_SECONDS}) must be at least 1.")
BUILD_WORK_DIR = env.str("BUILD_WORK_DIR", default="")  # where contexts are prepared; empty: the system temp dir
# More of the worker's paths that no build may see (docs/security.md#build-isolation), besides BASE_DIR, var/ and
# MEDIA_ROOT, e.g. "/root/.ssh,/etc/portal".
BUILD_HIDDEN_PATHS = env.list("BUILD_HIDDEN_PATHS", default=[])
# podman storage for the local builder when it is created automatically; empty: podman's defaults.
BUILD_PODMAN_ROOT = env.str("BUILD_PODMAN_ROOT", default="")
BUILD_PODMAN_RUNROOT = env.str("BUILD_PODMAN_RUNROOT", default="")

CRISPY_ALLOWED_TEMPLATE_PACKS = "bootstrap5"
CRISPY_TEMPLATE_PACK = "bootstrap5"

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = False
USE_TZ = True

LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
# plain: text for people (make run); json: one JSON object per line with the request id, user, run id and task id, for
# a log collector (docs/operations.md#logs; compose.yaml's stack uses it).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise BadSetting(f"LOG_FORMAT must be plain or json (got {LOG_FORMAT!r}).")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "portal.logformat.JsonLines"},
    },
    "filters": {
        "refusals_in_one_line": {"()": "portal.logfilters.RefusalsInOneLine"},
        "context": {"()": "portal.logcontext.LogContext"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["context"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own console handler (DEBUG only) would print each of its records a second time, next to the root's.
        "django": {"handlers": [], "level": LOG_LEVEL, "propagate": True},
        "django.request": {"filters": ["refusals_in_one_line"]},
        "django.channels.server": {"level": "WARNING"},
        "daphne": {"level": "WARNING"},
        "axes": {"level": "WARNING"},
    },
}

CSRF_FAILURE_VIEW = "portal.views.csrf_failure"

# --- Disk images, boot tests, hosts and rollouts ----------------------------------------------------------------------
# Each in a module of its own, imported here (after .env is read, above): their upper-case names are settings.
from portal import settings_diskimages, settings_hosts  # noqa: E402

for _concern in (settings_diskimages, settings_hosts):
    globals().update(settings_in(_concern))
    CELERY_BEAT_SCHEDULE.update(_concern.beat_schedule)
CELERY_TASK_ROUTES.update(settings_diskimages.task_routes)

# --- Retention (docs/operations.md#retention) ------------------------------------------------------------------------
# Beat asks hourly; a pass runs when the last one started this many hours ago. Each pass is a RetentionRun row.
RETENTION_EVERY_HOURS = env.int("RETENTION_EVERY_HOURS", default=24)
# Finished runs' logs older than this move to object storage (LOG_ARCHIVE_STORAGE), and out of the database; 0 keeps
# them in the database. At most LOG_ARCHIVE_RUNS_PER_PASS runs per pass (the rest wait for the next).
LOG_ARCHIVE_AFTER_DAYS = env.int("LOG_ARCHIVE_AFTER_DAYS", default=30)
LOG_ARCHIVE_STORAGE = env.str("LOG_ARCHIVE_STORAGE", default="default")  # a STORAGES alias
LOG_ARCHIVE_RUNS_PER_PASS = env.int("LOG_ARCHIVE_RUNS_PER_PASS", default=2000)
# Host snapshots older than this are thinned: the ones where the host's state changed stay, unchanged repeats go; 0
# keeps every snapshot.
HOST_SNAPSHOT_KEEP_DAYS = env.int("HOST_SNAPSHOT_KEEP_DAYS", default=14)
WEBHOOK_DELIVERY_KEEP_DAYS = env.int("WEBHOOK_DELIVERY_KEEP_DAYS", default=90)  # delivered or given up; 0 keeps them
EVENT_KEEP_DAYS = env.int("EVENT_KEEP_DAYS", default=30)  # stored events (the API's event list); 0 keeps them
LOGIN_RECORD_KEEP_DAYS = env.int("LOGIN_RECORD_KEEP_DAYS", default=90)  # failed attempts and logins; 0 keeps them
CELERY_BEAT_SCHEDULE["retention-due"] = {"task": "portal.tasks.retention_due", "schedule": 3600.0}
# Images in the registry (docs/image-retention.md): the numbers a definition without a policy of its own (and of a team
# without a default) keeps; what is in use is kept whatever they say.
IMAGE_RETENTION_KEEP_LAST = env.int("IMAGE_RETENTION_KEEP_LAST", default=10)
IMAGE_RETENTION_KEEP_DAYS = env.int("IMAGE_RETENTION_KEEP_DAYS", default=30)
IMAGE_RETENTION_KEEP_STAGE_HISTORY = env.int("IMAGE_RETENTION_KEEP_STAGE_HISTORY", default=3)
IMAGE_CLEANUP_TIMEOUT_SECONDS = env.int("IMAGE_CLEANUP_TIMEOUT_SECONDS", default=1800)
# The registry's garbage collection, run by the worker after a cleanup deleted images (it frees their blobs), e.g.
# "docker-registry garbage-collect /etc/docker/registry/config.yml". Empty: the registry's own schedule frees them.
REGISTRY_GC_COMMAND = env.str("REGISTRY_GC_COMMAND", default="")

# --- Promotions and notifications (docs/promotions.md) ---------------------------------------------------------------
PROMOTION_APPLY_TIMEOUT_SECONDS = env.int("PROMOTION_APPLY_TIMEOUT_SECONDS", default=600)  # skopeo copy + verify
# The largest advisory feed (OSV JSON or zip, unpacked) an import reads; a bigger one is refused with this name.
SUPPLY_CHAIN_FEED_MAX_BYTES = env.int("SUPPLY_CHAIN_FEED_MAX_BYTES", default=64 * 1024 * 1024)
# Beat reads the advisory feeds that have a URL and are due (each feed's own refresh_hours) this often.
CELERY_BEAT_SCHEDULE["advisory-feeds-refresh-due"] = {"task": "builds.supplychain.tasks.advisory_feeds_refresh_due",
                                                      "schedule": 900.0}
# Where workers write and read GPG image signatures (containers/image's lookaside store): a directory every worker
# that signs or promotes shares, and web, which serves it read-only to hosts at /lookaside/. By default under
# MEDIA_ROOT, the volume compose.yaml already shares between them.
SUPPLY_CHAIN_LOOKASIDE_DIR = env.str("SUPPLY_CHAIN_LOOKASIDE_DIR", default="") or str(MEDIA_ROOT / "lookaside")
SBOM_STORAGE = env.str("SBOM_STORAGE", default="default")  # a STORAGES alias for the builds' CycloneDX SBOMs
# A rotated key leaves every policy at the date it was given (policies read the date); this retires it then.
CELERY_BEAT_SCHEDULE["signing-key-rotations-retire"] = {"task": "builds.supplychain.tasks.key_rotations_retire_due",
                                                        "schedule": 300.0}
WEBHOOK_TIMEOUT_SECONDS = env.float("WEBHOOK_TIMEOUT_SECONDS", default=10.0)  # one delivery attempt
WEBHOOK_MAX_ATTEMPTS = env.int("WEBHOOK_MAX_ATTEMPTS", default=6)  # then the delivery is marked failed
WEBHOOK_RETRY_BASE_SECONDS = env.float("WEBHOOK_RETRY_BASE_SECONDS", default=30.0)  # 30 s, 2 min, 8 min, 32 min, 1 h
CELERY_BEAT_SCHEDULE["promotions-apply-due"] = {"task": "builds.releases.tasks.promotions_apply_due", "schedule": 60.0}
CELERY_BEAT_SCHEDULE["webhook-deliveries-due"] = {"task": "portal.tasks.webhook_deliveries_due", "schedule": 60.0}
