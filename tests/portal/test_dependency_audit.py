"""`make audit` (scripts/audit.py around pip-audit): a known vulnerability fails it; an advisory database that cannot be
reached is said in so many words and fails it only with --strict. pip-audit runs for real, against an OSV service on
loopback that knows what each test needs it to know."""

import json
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.helpers import ROOT, free_port

pytestmark = pytest.mark.processes

ADVISORY = {"id": "PYSEC-2099-1", "aliases": ["CVE-2099-0001"], "summary": "A planted advisory.",
            "affected": [{"package": {"name": "sqlparse", "ecosystem": "PyPI"},
                          "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "99.0"}]}]}]}


class FakeOSV(BaseHTTPRequestHandler):
    vulnerable = set()

    def do_POST(self):  # noqa: N802 - the name http.server calls
        query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = {"vulns": [ADVISORY]} if query["package"]["name"] in self.vulnerable else {}
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def osv():
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), FakeOSV)
    # shutdown() returns at serve_forever's next poll: every 50 ms, not every half second
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/query"
    server.shutdown()
    FakeOSV.vulnerable = set()


@pytest.fixture
def lock(tmp_path):
    """Two pinned, hashed packages, copied from the run-time lock."""
    text = (ROOT / "requirements.lock").read_text()
    blocks = [re.search(rf"^{name}==.*?(?=^\S)", text, re.M | re.S).group(0) for name in ("sqlparse", "asgiref")]
    path = tmp_path / "two.lock"
    path.write_text("".join(blocks))
    return path


def audit(lock, tmp_path, *args):
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "audit.py"), str(lock), "--service", "osv",
                           "--cache-dir", str(tmp_path / "cache"), *args], capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout


def test_a_known_vulnerability_fails_the_audit_naming_package_advisory_and_fix(osv, lock, tmp_path):
    FakeOSV.vulnerable = {"sqlparse"}
    status, out = audit(lock, tmp_path, "--osv-url", osv)
    assert status == 1, out
    assert re.search(r"VULNERABLE: sqlparse \S+: PYSEC-2099-1 \(CVE-2099-0001\), fixed in 99.0", out)
    assert "1 known vulnerabilities in 1 of the 2 packages audited" in out


def test_clean_packages_pass_saying_how_many_were_audited(osv, lock, tmp_path):
    status, out = audit(lock, tmp_path, "--osv-url", osv)
    assert status == 0 and "No known vulnerabilities in the 2 packages audited." in out


def test_an_unreachable_advisory_database_is_said_plainly_and_fails_only_when_strict(lock, tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}/v1/query"
    status, out = audit(lock, tmp_path, "--osv-url", nowhere)
    assert status == 0 and "ADVISORY DATABASE UNREACHABLE" in out and "Nothing was checked." in out
    status, out = audit(lock, tmp_path, "--osv-url", nowhere, "--strict")
    assert status == 2 and "ADVISORY DATABASE UNREACHABLE" in out


def test_every_package_skipped_is_an_unreachable_database_not_a_clean_audit():
    import importlib.util

    spec = importlib.util.spec_from_file_location("audit_script", ROOT / "scripts" / "audit.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    skipped = {"dependencies": [{"name": n, "version": "1.0", "skip_reason": f"Dependency not found on PyPI and could "
                                 f"not be audited: {n} (1.0)"} for n in ("a", "b")], "fixes": []}
    status, lines = script.verdict(skipped)
    assert status == 0 and lines[0].startswith("ADVISORY DATABASE UNREACHABLE: none of the 2 pinned packages")
    assert script.verdict(skipped, strict=True)[0] == 2
    partly = {"dependencies": [skipped["dependencies"][0], {"name": "c", "version": "2.0", "vulns": []}]}
    status, lines = script.verdict(partly)
    assert status == 0 and lines[0].startswith("1 of 2 packages could not be audited: a (")
