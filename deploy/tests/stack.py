"""The production stack of compose.yaml, brought up on this machine the way docs/deploy.md says, for the deploy test.

Nothing can be pulled here and container bridges are not allowed, so: deploy/local-images.sh makes every image from
Debian's packages (the base with mmdebstrap, cached under /var/cache/image-mode-portal), podman-compose builds the
portal's images from the Containerfile on that base, and deploy/compose.local.yaml puts every service on the host's
network with a loopback port of its own. Everything else (the env file, the secrets, the certificates) is written here
the way an operator writes it.
"""

import base64
import datetime
import ipaddress
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import bcrypt
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.helpers import ARTIFACTS, ROOT, free_port, wait_for

CACHE = Path(os.environ.get("IMAGE_CACHE", "/var/cache/image-mode-portal"))
PROJECT = "imp-deploy-test"
COMPOSE_FILES = ["compose.yaml", "deploy/compose.local.yaml"]
REGISTRY_USER = "portal"
DEPLOY_ARTIFACTS = ARTIFACTS / "deploy"
RUNNING_SERVICES = ("web", "web-2", "agents", "worker-builds", "worker-hosts", "worker-default", "beat", "proxy")


def make_certificates(directory: Path):
    """A CA and a certificate for localhost signed by it, as a site's own PKI would issue: cert, key and the CA's cert."""
    now = datetime.datetime.now(datetime.UTC)

    def name(common):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("deploy test CA")).issuer_name(name("deploy test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "portal.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "portal.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (directory / "portal.key").chmod(0o644)  # read by the proxy's process in its container
    ca_path = directory.parent / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    return ca_path


class Stack:
    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.secrets = workdir / "secrets"
        self.env_file = workdir / "portal.env"
        self.ports = {name: free_port() for name in
                      ("postgres", "redis", "registry", "web1", "web2", "agents", "https", "http", "registry_tls")}
        self.registry = f"127.0.0.1:{self.ports['registry']}"
        self.registry_password = secrets.token_urlsafe(16)
        self.metrics_token = secrets.token_urlsafe(24)
        self.url = f"https://localhost:{self.ports['https']}"
        self.registry_tls_url = f"https://localhost:{self.ports['registry_tls']}"
        self.ca = None
        self.env = self._podman_env()

    # --- configuration, as an operator writes it -------------------------------------------------------------------

    def _podman_env(self):
        storage = self.workdir / "storage.conf"
        # A store of the test's own, kept between runs, so a warm run rebuilds only the layers that changed.
        storage.write_text('[storage]\ndriver = "overlay"\n'
                           f'graphroot = "{CACHE}/storage"\nrunroot = "/run/image-mode-portal/storage"\n')
        # The repository's podman settings, with the host's network for image builds (apt and pip reach the mirrors).
        conf = (ROOT / "deploy" / "containers.conf").read_text().replace('netns = "none"', 'netns = "host"')
        (self.workdir / "containers.conf").write_text(conf)
        return {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(storage),
            "CONTAINERS_CONF": str(self.workdir / "containers.conf"),
            "IMAGE_CACHE": str(CACHE),
            "PORTAL_ENV_FILE": str(self.env_file),
            "PORTAL_SECRETS": str(self.secrets),
            "WEB_PORT_1": str(self.ports["web1"]),
            "WEB_PORT_2": str(self.ports["web2"]),
            "AGENTS_PORT": str(self.ports["agents"]),
            "REGISTRY_PORT": str(self.ports["registry"]),
        }

    def write_configuration(self):
        p = self.ports
        postgres_password = secrets.token_urlsafe(16)
        redis_password = secrets.token_urlsafe(16)
        settings = {
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_urlsafe(50),
            "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "AUDIT_HMAC_KEY": secrets.token_urlsafe(32),
            "AUDIT_CHECKPOINT_PATH": "/var/lib/portal-audit/checkpoints.jsonl",
            "ALLOWED_HOSTS": "localhost",
            "CSRF_TRUSTED_ORIGINS": self.url,
            "SITE_URL": self.url,
            "BEHIND_TLS_PROXY": "true",
            "TRUSTED_PROXIES": "127.0.0.1",
            "EMAIL_URL": "consolemail://",
            "METRICS_TOKEN": self.metrics_token,  # Prometheus scrapes each replica directly, never through the proxy
            "POSTGRES_USER": "portal",
            "POSTGRES_PASSWORD": postgres_password,
            "POSTGRES_DB": "portal",
            "PGPORT": p["postgres"],
            "DATABASE_URL": f"postgres://portal:{postgres_password}@127.0.0.1:{p['postgres']}/portal",
            "REDIS_PASSWORD": redis_password,
            "REDIS_PORT": p["redis"],
            "REDIS_URL": f"redis://:{redis_password}@127.0.0.1:{p['redis']}/0",
            "REGISTRY_URL": self.registry,
            "REGISTRY_INSECURE": "true",
            "REGISTRY_SHARED_NAMESPACES": "base",  # where the operator publishes the base image every team builds on
            "REGISTRY_AUTH_FILE": "/run/secrets/registry_auth",
            "PORTAL_ADDRESS": "localhost",
            "REGISTRY_ADDRESS": f"localhost:{p['registry_tls']}",
            "REGISTRY_UPSTREAM": self.registry,
            "PORTAL_UPSTREAMS": f"to 127.0.0.1:{p['web1']} 127.0.0.1:{p['web2']}",
            "AGENT_UPSTREAMS": f"to 127.0.0.1:{p['agents']}",
            "CADDY_TLS": "/etc/caddy/tls/portal.crt /etc/caddy/tls/portal.key",
            "CADDY_HTTPS_PORT": p["https"],
            "CADDY_HTTP_PORT": p["http"],
            "BUILD_PULL_POLICY": "missing",
            "DISK_IMAGE_BUILDER_IMAGES": f"{self.registry}/tools/bootc-image-builder:standin",
            # The stand-in answers image-builder's command line too; image-builder is the default tool.
            "DISK_IMAGE_IMAGE_BUILDER_IMAGE": f"{self.registry}/tools/bootc-image-builder:standin",
            "DISK_IMAGE_BUILDER_PULL": "missing",
        }
        self.env_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        self.env_file.chmod(0o600)
        self.secrets.mkdir(exist_ok=True)
        htpasswd = bcrypt.hashpw(self.registry_password.encode(), bcrypt.gensalt(rounds=10)).decode()
        (self.secrets / "registry.htpasswd").write_text(f"{REGISTRY_USER}:{htpasswd}\n")
        auth = base64.b64encode(f"{REGISTRY_USER}:{self.registry_password}".encode()).decode()
        (self.secrets / "registry-auth.json").write_text(json.dumps({"auths": {self.registry: {"auth": auth}}}))
        # Read by the workers' user (uid 10001) through a bind mount: compose does not change a file secret's owner.
        (self.secrets / "registry-auth.json").chmod(0o644)
        (self.secrets / "registries.conf").write_text(f'[[registry]]\nlocation = "{self.registry}"\ninsecure = true\n')
        self.ca = make_certificates(self.secrets / "tls")

    # --- commands --------------------------------------------------------------------------------------------------

    def run(self, *args, timeout=600, check=True, **kwargs):
        result = subprocess.run(args, cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(map(str, args))} exited {result.returncode}:\n"
                                 f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result

    def compose(self, *args, timeout=900, check=True):
        files = [arg for name in COMPOSE_FILES for arg in ("-f", name)]
        return self.run(sys.executable, "-m", "podman_compose", "-p", PROJECT, *files, *args, timeout=timeout,
                        check=check)

    def podman(self, *args, timeout=300, check=True, **kwargs):
        return self.run("podman", *args, timeout=timeout, check=check, **kwargs)

    @staticmethod
    def container(service):
        return f"{PROJECT}_{service}_1"

    def manage(self, *args, service="web"):
        """A management command in a running portal container, as `podman-compose exec web python manage.py ...`."""
        return self.podman("exec", self.container(service), "python", "manage.py", *args).stdout

    def shell(self, code, service="web"):
        return self.manage("shell", "--no-imports", "-c", code, service=service)

    def healthy(self, service):
        return self.podman("healthcheck", "run", self.container(service), check=False).returncode == 0

    def state(self, service):
        result = self.podman("inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", self.container(service),
                             check=False)
        return result.stdout.strip()

    # --- life cycle ------------------------------------------------------------------------------------------------

    def build_images(self):
        self.run(str(ROOT / "deploy" / "local-images.sh"), timeout=1500)
        # The two portal images, one after the other (the worker's starts from web's, which also serves migrate, beat
        # and the hosts and default workers).
        self.compose("build", "web", timeout=1500)
        self.compose("build", "worker-builds", timeout=1500)
        self.podman("image", "prune", "--force")  # the images these builds replaced: the store stays the size of one set

    def up(self):
        """`podman-compose up -d` in the order compose.yaml's depends_on gives, one step at a time: podman 4.3 runs no
        healthchecks by itself (podman-compose skips `service_healthy` before podman 4.6), and its `--requires`,
        which podman-compose adds for depends_on, fails to start a container whose dependency has a dependency."""
        self.compose("down", "--volumes", check=False)
        self.compose("up", "-d", "--no-deps", "postgres", "redis", "registry")
        wait_for(lambda: self.healthy("postgres") and self.healthy("redis"), timeout=120, interval=1,
                 what="postgres and redis to pass their healthchecks")
        self.compose("up", "-d", "--no-deps", "migrate")
        wait_for(lambda: self.state("migrate").startswith("exited"), timeout=300, interval=1, what="migrate to end")
        assert self.state("migrate") == "exited 0", self.logs("migrate")
        self.compose("up", "-d", "--no-deps", *RUNNING_SERVICES)
        wait_for(lambda: self.healthy("web") and self.healthy("web-2") and self.healthy("agents"), timeout=180,
                 interval=1, what="both web replicas and the agents' server to pass their healthchecks")
        # A build is refused at once while no worker consumes its queue: wait for the builds worker to be ready.
        wait_for(lambda: "builds@" in self.logs("worker-builds") and " ready." in self.logs("worker-builds"),
                 timeout=120, interval=1, what="the builds worker to be ready")

    def logs(self, service):
        return self.podman("logs", self.container(service), check=False).stdout + \
            self.podman("logs", self.container(service), check=False).stderr

    def save_logs(self):
        DEPLOY_ARTIFACTS.mkdir(parents=True, exist_ok=True)
        names = self.podman("ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format",
                            "{{.Names}}", check=False).stdout.split()
        for name in names:
            result = self.podman("logs", name, check=False)
            (DEPLOY_ARTIFACTS / f"{name}.log").write_text(result.stdout + result.stderr)

    def down(self):
        self.save_logs()
        self.compose("down", "--volumes", check=False)

    # --- images the stack's registry serves to its builders --------------------------------------------------------

    def push(self, local_ref, repository):
        self.podman("push", "--tls-verify=false", "--creds", f"{REGISTRY_USER}:{self.registry_password}",
                    local_ref, f"{self.registry}/{repository}")
        return f"{self.registry}/{repository}"

    def run_status(self, run_id):
        return self.shell(f"from portal.models import Run; r = Run.objects.get(pk={run_id}); "
                          "print(r.status + ' | ' + r.exit_reason)").strip()

    def wait_for_run(self, run_id, timeout=300):
        """Waits for the run to succeed; its status, reason and the builder's log otherwise."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            last = self.run_status(run_id)
            if last.startswith("succeeded"):
                return last
            if last.startswith(("failed", "cancelled")):
                break
            time.sleep(2)
        raise AssertionError(f"run {run_id}: {last}\n{self.logs('worker-builds')[-6000:]}")
