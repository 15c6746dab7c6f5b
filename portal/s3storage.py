"""The storage behind OBJECT_STORAGE=s3: django-storages' `S3Storage` whose boto3 sessions share one botocore loader.

botocore reads each service's model and the endpoint tables (some MB of JSON, about 0.15 s of CPU) once per loader, and
every boto3 session has a loader of its own. django-storages makes a session per storage and thread, and Django makes
the storage again whenever the settings change, so without sharing a web or worker process pays that again and again.
Credentials stay per session. This module is imported only when the setting names it.
"""

from __future__ import annotations

import functools
from pathlib import Path

import boto3
import botocore.loaders
import botocore.session
from storages.backends import s3


class _SharedLoader(botocore.loaders.Loader):
    """Every boto3.Session appends its data folder to its loader's search paths. This loader has that folder from the
    start and hands out a copy, so sharing it adds nothing per session."""

    @property
    def search_paths(self):
        return list(self._search_paths)


@functools.cache
def _shared_loader() -> botocore.loaders.Loader:
    return _SharedLoader(extra_search_paths=[str(Path(boto3.__file__).parent / "data")])


class S3Storage(s3.S3Storage):
    def _create_session(self):
        if self.session_profile:
            return super()._create_session()
        botocore_session = botocore.session.get_session()
        botocore_session.register_component("data_loader", _shared_loader())
        return boto3.Session(botocore_session=botocore_session, aws_access_key_id=self.access_key,
                             aws_secret_access_key=self.secret_key, aws_session_token=self.security_token)
