"""A private git repository over smart HTTP on loopback: git's own `git http-backend` behind a small HTTP server that
wants a Basic login, as GitHub or GitLab do for a private repository.

The `git_server` fixture is in tests/portal/conftest.py (the egress and secrets tests use it). The server is allowed
by the egress policy while it runs, and `http` is added to the git URL schemes of the test (a real server speaks https).
"""

import base64
import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class GitHTTPServer:
    def __init__(self, directory, *, username, token):
        self.directory = Path(directory)
        self.username, self.token = username, token
        self.authorized, self.refused = [], []
        expected = "Basic " + base64.b64encode(f"{username}:{token}".encode()).decode()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                self.serve()

            def do_POST(self):  # noqa: N802
                self.serve()

            def serve(self):
                if self.headers.get("Authorization") != expected:
                    server.refused.append(self.path)
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="private"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                server.authorized.append(self.path)
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {"PATH": os.environ["PATH"], "GIT_PROJECT_ROOT": str(server.directory), "GIT_HTTP_EXPORT_ALL": "1",
                       "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
                       "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
                       "REMOTE_USER": server.username, "REMOTE_ADDR": "127.0.0.1", "GIT_CONFIG_NOSYSTEM": "1"}
                if self.headers.get("Content-Encoding"):
                    env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
                if self.headers.get("Git-Protocol"):
                    env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
                out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                status, headers = 200, []
                for line in head.decode().split("\r\n"):
                    key, _, value = line.partition(":")
                    if key.lower() == "status":
                        status = int(value.split()[0])
                    elif key:
                        headers.append((key, value.strip()))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.host = f"127.0.0.1:{self.port}"
        # stop()'s shutdown() returns at serve_forever's next poll: every 50 ms, not every half second
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def repository(self, name, files: dict[str, str]) -> str:
        """A bare repository `name` with one commit of `files` on main; returns its URL."""
        work = self.directory / f"{name}-work"
        subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
        for path, text in files.items():
            (work / path).parent.mkdir(parents=True, exist_ok=True)
            (work / path).write_text(text)
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(work)]
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "-m", "init"], check=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(self.directory / f"{name}.git")], check=True)
        return f"http://{self.host}/{name}.git"

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        shutil.rmtree(self.directory, ignore_errors=True)

