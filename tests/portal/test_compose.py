"""compose.yaml is the production topology, and the Containerfile makes its images. What the files promise is checked
here; `make deploy-test` (deploy/tests/) brings the stack up and uses it."""

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
PORTAL_IMAGES = ("localhost/image-mode-portal:latest", "localhost/image-mode-portal-worker:latest")
PORTAL_SERVICES = {name for name, service in SERVICES.items() if service.get("image") in PORTAL_IMAGES}
CONTAINERFILE = (ROOT / "Containerfile").read_text()


def test_it_has_a_proxy_web_agents_one_worker_per_kind_of_work_beat_and_the_backing_services():
    assert set(SERVICES) == {"proxy", "web", "agents", "worker-builds", "worker-boottests", "worker-hosts",
                             "worker-default", "beat", "migrate", "postgres", "redis", "registry"}
    assert PORTAL_SERVICES == {"web", "agents", "worker-builds", "worker-boottests", "worker-hosts", "worker-default",
                               "beat", "migrate"}


def test_every_service_reads_its_settings_from_the_env_file_only():
    for name, service in SERVICES.items():
        assert "environment" not in service, name
        if name != "registry":  # configured by deploy/registry.yml alone
            assert service["env_file"] == ["${PORTAL_ENV_FILE:-.env}"], name


def test_every_service_that_runs_the_portal_image_can_build_it():
    for name in PORTAL_SERVICES:
        build = SERVICES[name]["build"]
        assert build["dockerfile"] == "Containerfile", name
        worker = SERVICES[name]["image"].endswith("-worker:latest")
        assert build["target"] == ("worker" if worker else "portal"), name


def test_web_has_no_host_port_and_runs_as_replicas_behind_the_proxy():
    web = SERVICES["web"]
    assert "ports" not in web and web["expose"] == ["8000"]
    assert web["deploy"]["replicas"] >= 2
    assert SERVICES["proxy"]["ports"] == ["80:80", "443:443"]
    assert "./deploy/Caddyfile:/etc/caddy/Caddyfile:ro" in SERVICES["proxy"]["volumes"]
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    assert "{$PORTAL_UPSTREAMS:dynamic a web 8000}" in caddyfile  # every replica the name "web" resolves to
    assert "health_uri /health/live" in caddyfile and "tls {$CADDY_TLS}" in caddyfile


def test_the_proxy_sends_the_agents_endpoints_to_the_agents_server_and_the_rest_to_web():
    agents = SERVICES["agents"]
    assert agents["command"][:3] == ["python", "-m", "portal.machine_server"] and agents["expose"] == ["8000"]
    assert "ports" not in agents and agents["deploy"]["replicas"] >= 2
    assert "http://127.0.0.1:8000/health/ready" in agents["healthcheck"]["test"]
    assert "agents" in SERVICES["proxy"]["depends_on"]
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    routed = re.search(r"reverse_proxy /agent/v1/\* \{\n\s*\{\$AGENT_UPSTREAMS:dynamic a agents 8000\}", caddyfile)
    assert routed, "the agents' endpoints go to the agents' servers"
    # Caddy orders a directive with a path before the same directive without one: the agents' route is matched first.
    assert caddyfile.index("reverse_proxy /agent/v1/*") < caddyfile.index("{$PORTAL_UPSTREAMS")


def test_only_the_builds_worker_is_privileged_and_only_workers_that_hide_files_from_commands_are_root():
    for name in PORTAL_SERVICES:
        service = SERVICES[name]
        if name == "worker-builds":
            assert service["privileged"] is True and service["user"] == "root"
            assert "worker-containers:/var/lib/containers" in service["volumes"]
        elif name == "worker-boottests":  # root for the mount namespace its skopeo runs in; only /dev/kvm added
            assert not service.get("privileged") and service["user"] == "root"
            assert service["devices"] == ["/dev/kvm:/dev/kvm"]
        else:
            assert not service.get("privileged") and "user" not in service, name
    assert re.search(r"^USER portal$", CONTAINERFILE.split("AS worker")[0], re.M)


def test_each_worker_takes_its_own_queues_with_its_own_concurrency():
    def queues(name):
        command = SERVICES[name]["command"]
        return command[command.index("-Q") + 1], int(command[command.index("-c") + 1])

    assert queues("worker-builds")[0] == "builds.amd64,images.amd64"  # local builders of this architecture
    assert queues("worker-hosts")[0] == "hosts"
    assert "threads" in SERVICES["worker-hosts"]["command"]  # one process: its tasks share the kept-open SSH connections
    assert queues("worker-default")[0] == "default"


def test_beat_is_one_and_only_one():
    assert SERVICES["beat"]["deploy"]["replicas"] == 1
    assert "beat" in SERVICES["beat"]["command"]


def test_redis_wants_a_password_and_keeps_an_append_only_file():
    command = " ".join(SERVICES["redis"]["command"])
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    assert "--appendonly yes" in command and "redis-data:/data" in SERVICES["redis"]["volumes"]


def test_the_registry_wants_a_login():
    registry = yaml.safe_load((ROOT / "deploy" / "registry.yml").read_text())
    assert registry["auth"]["htpasswd"]["path"] == "/run/secrets/registry_htpasswd"
    assert SERVICES["registry"]["secrets"] == ["registry_htpasswd"]
    assert "registry_auth" in SERVICES["worker-builds"]["secrets"]
    assert {"source": "registry_auth", "target": "/run/containers/0/auth.json"} in SERVICES["worker-builds"]["secrets"]


def test_services_start_in_order_and_web_is_checked_for_readiness():
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in PORTAL_SERVICES - {"migrate"}:
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["redis"]["condition"] == "service_healthy", name
    assert "http://127.0.0.1:8000/health/ready" in SERVICES["web"]["healthcheck"]["test"]


def test_the_containerfile_takes_its_base_installs_hashed_runtime_locks_and_collects_static_for_production():
    assert re.search(r"^ARG BASE=\S+\n+FROM \$\{BASE\} AS portal$", CONTAINERFILE, re.M)
    assert "pip install --no-cache-dir --require-hashes -r /tmp/requirements.lock" in CONTAINERFILE
    assert "requirements-dev" not in CONTAINERFILE and "requirements-run" not in CONTAINERFILE
    assert re.search(r"DEBUG=false .*\n.*collectstatic", CONTAINERFILE)


def test_secrets_local_state_and_version_control_stay_out_of_the_image():
    ignored = (ROOT / ".containerignore").read_text().split()
    for entry in (".env", "secrets/", "var/", ".git", ".venv/", "test-artifacts/", "media/"):
        assert entry in ignored, entry


def test_every_variable_the_stack_reads_is_documented_in_env_example():
    documented = {line.partition("=")[0].lstrip("# ") for line in (ROOT / ".env.example").read_text().splitlines()
                  if "=" in line}
    caddyfile = (ROOT / "deploy" / "Caddyfile").read_text()
    compose_text = (ROOT / "compose.yaml").read_text()
    read = set(re.findall(r"\{\$([A-Z_]+)", caddyfile)) | set(re.findall(r"\$\$\{?([A-Z_]+)", compose_text))
    assert read <= documented, read - documented


def test_the_portal_image_has_the_pg_dump_of_the_postgresql_it_runs_against():
    """`manage.py backup` runs pg_dump in the portal's containers, and pg_dump refuses a server newer than itself: the
    image's client (Debian 12 packages 15) and compose's PostgreSQL (and the deploy test's stand-in) are one major."""
    client = re.search(r"postgresql-client-(\d+)", CONTAINERFILE.split("AS worker")[0])
    assert client, "the portal image (and so the worker image built on it) installs PostgreSQL's client tools"
    server = re.fullmatch(r"docker\.io/library/postgres:(\d+)", SERVICES["postgres"]["image"])
    local = re.search(r"image: localhost/imp-postgres:(\d+)", (ROOT / "deploy" / "compose.local.yaml").read_text())
    stand_in = re.search(r"postgresql-(\d+)", (ROOT / "deploy" / "images" / "postgres.Containerfile").read_text())
    assert client.group(1) == server.group(1) == local.group(1) == stand_in.group(1) == "15"
