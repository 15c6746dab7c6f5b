"""Object storage for tests: a real S3 API server on loopback (moto in server mode, `moto_server`), one per test
session, and a fresh bucket per test with the portal's settings pointed at it, as OBJECT_STORAGE=s3 would."""

import json
import os
import shutil
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from tests.helpers import IN_CI, free_port, wait_for

# The first requests a fresh moto server answers without checking credentials: the ones that make the portal's user.
UNCHECKED_REQUESTS = 3


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen
    access_key: str = "AKIAIOSFODNN7EXAMPLE"
    secret_key: str = "unchecked"

    def client(self, service="s3", **overrides):
        options = {"aws_access_key_id": self.access_key, "aws_secret_access_key": self.secret_key,
                   "region_name": "us-east-1", "endpoint_url": self.endpoint,
                   "config": Config(s3={"addressing_style": "path"})}
        return boto3.client(service, **(options | overrides))


def _moto_server_command():
    found = shutil.which("moto_server", path=str(Path(sys.executable).parent))
    if found is None:
        message = "moto_server is missing: `make venv` installs moto[server] from requirements-dev.lock"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


def _start_moto(tmp_path_factory, *, check_keys):
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(UNCHECKED_REQUESTS)} if check_keys else None
    with open(log, "wb") as out:
        process = subprocess.Popen([_moto_server_command(), "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                   stderr=subprocess.STDOUT, env=env)
    server = S3Server(endpoint=f"http://127.0.0.1:{port}", process=process)

    def listening():
        if process.poll() is not None:
            raise AssertionError(f"moto_server exited: {log.read_text()[-2000:]}")
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, timeout=30, what="moto_server to listen")
    if check_keys:
        iam = server.client("iam")
        iam.create_user(UserName="portal")
        iam.put_user_policy(UserName="portal", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="portal")["AccessKey"]
        server.access_key, server.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
    return server


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory):
    """moto's S3 API server on a loopback port of its own, for the whole session. It takes any key (moto checks keys
    only on signed headers, and a presigned URL carries its signature in the query)."""
    server = _start_moto(tmp_path_factory, check_keys=False)
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


@pytest.fixture(scope="session")
def moto_server_checking_keys(tmp_path_factory):
    """Another moto server that checks keys and signatures, as S3 does: the portal's user and its key are made with
    its first (unchecked) requests. For the tests of wrong credentials."""
    server = _start_moto(tmp_path_factory, check_keys=True)
    yield server
    server.process.terminate()
    server.process.wait(timeout=10)


def s3_storage_settings(server, bucket_name, **overrides):
    """The settings OBJECT_STORAGE=s3 makes (portal/settings.py), for `bucket_name` on `server`; `overrides` may
    change the bucket, endpoint, access_key and secret_key."""
    values = {"bucket": bucket_name, "endpoint": server.endpoint, "access_key": server.access_key,
              "secret_key": server.secret_key}
    values.update(overrides)
    return {
        "OBJECT_STORAGE": "s3",
        "S3_BUCKET": values["bucket"],
        "S3_ENDPOINT_URL": values["endpoint"],
        "S3_ACCESS_KEY_ID": values["access_key"],
        "S3_SECRET_ACCESS_KEY": values["secret_key"],
        "DOWNLOADS_VIA": "presigned",
        "STORAGES_DEFAULT": {
            "BACKEND": "portal.s3storage.S3Storage",
            "OPTIONS": {"bucket_name": values["bucket"], "endpoint_url": values["endpoint"], "region_name": "us-east-1",
                        "access_key": values["access_key"], "secret_key": values["secret_key"], "location": "",
                        "addressing_style": "path", "signature_version": "s3v4", "file_overwrite": False,
                        "default_acl": None, "querystring_expire": 3600},
        },
    }


def point_settings_at(settings, values):
    values = dict(values)
    default = values.pop("STORAGES_DEFAULT")
    for key, value in values.items():
        setattr(settings, key, value)
    settings.STORAGES = {**settings.STORAGES, "default": default}  # Django forgets the storages it made


@dataclass
class Bucket:
    name: str
    server: S3Server

    def keys(self):
        pages = self.server.client().get_paginator("list_objects_v2").paginate(Bucket=self.name)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def read(self, key):
        return self.server.client().get_object(Bucket=self.name, Key=key)["Body"].read()

    def multipart_uploads(self):
        return self.server.client().list_multipart_uploads(Bucket=self.name).get("Uploads", [])


def _bucket_on(server, settings):
    bucket = Bucket(name=f"portal-{uuid.uuid4().hex[:12]}", server=server)
    server.client().create_bucket(Bucket=bucket.name)
    point_settings_at(settings, s3_storage_settings(server, bucket.name))
    return bucket


@pytest.fixture
def s3(settings, moto_server):
    """A fresh bucket on the moto server, and the portal's default storage in it (downloads by presigned URL)."""
    return _bucket_on(moto_server, settings)


@pytest.fixture
def s3_checking_keys(settings, moto_server_checking_keys):
    """The same on the moto server that checks keys."""
    return _bucket_on(moto_server_checking_keys, settings)
