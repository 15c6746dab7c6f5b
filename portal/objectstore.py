"""Object storage: where disk images, their checksums and archived logs are kept, and how a download is handed out.

Everything the portal keeps outside the database goes through Django's storage API, under a `STORAGES` alias named
by a setting (`DISK_IMAGE_STORAGE`, `LOG_ARCHIVE_STORAGE`). With `OBJECT_STORAGE=s3` the default alias is
django-storages' `S3Storage` (boto3) on any S3-compatible service; otherwise files live under MEDIA_ROOT. This module
is the one place that knows the difference:

- `aliased()` gives a storage that finds its alias when first used and again after the settings change, so a model's
  FileField follows the settings (and a test that points them at another storage) instead of keeping the storage it
  found when the model was imported;
- `explain()` turns boto3's errors into one sentence naming the setting to fix (S3_BUCKET, S3_ACCESS_KEY_ID, ...);
- `check()` writes, reads and deletes a probe object (`manage.py storage_check`); `bucket_reachable()` lists the
  bucket, for start-up (`portal.startup.require_storage`);
- `download_response()` hands a stored file to the client the way `DOWNLOADS_VIA` says: a redirect to a presigned URL
  (S3 serves the bytes, ranges included), an `X-Accel-Redirect` for the proxy to serve from its own disk (Caddy's
  `handle_response`, see deploy/Caddyfile), or streamed by the web process (`make run` only);
- `read_range()` reads some bytes of an object without fetching the rest (archived logs are read a few chunks at a
  time).
"""

from __future__ import annotations

import contextlib
import copy
import uuid
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import FileSystemStorage, storages
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.utils.functional import LazyObject, empty

STREAM_CHUNK = 1024 * 1024
# Where the proxy finds MEDIA_ROOT: X-Accel-Redirect: /protected-media/<stored name> (deploy/Caddyfile; nginx: an
# `internal` location with `alias` to MEDIA_ROOT).
PROXY_PREFIX = "/protected-media/"


class StorageUnavailable(Exception):
    """Object storage refused or could not be reached; the message names the setting to check."""


class AliasedStorage(LazyObject):
    """The storage of the `STORAGES` alias that the setting `alias_setting` names, found when first used and again
    after the settings change (as Django's own `default_storage` is).

    A FileField evaluates its storage callable once, when the model class is made; handing it this object instead of
    the storage itself keeps it following the settings (and a test that points them at another storage)."""

    def __init__(self, alias_setting: str):
        super().__init__()
        self.__dict__["alias_setting"] = alias_setting

    def _setup(self):
        self._wrapped = storages[getattr(settings, self.__dict__["alias_setting"], "default")]


_aliased: dict[str, AliasedStorage] = {}


def aliased(alias_setting: str) -> AliasedStorage:
    """The one AliasedStorage of `alias_setting` (e.g. "DISK_IMAGE_STORAGE")."""
    if alias_setting not in _aliased:
        _aliased[alias_setting] = AliasedStorage(alias_setting)
    return _aliased[alias_setting]


@receiver(setting_changed)
def _settings_changed(*, setting, **kwargs):
    if setting in ("STORAGES", "MEDIA_ROOT") or setting.endswith("_STORAGE"):
        for instance in _aliased.values():
            instance._wrapped = empty


def unwrap(storage):
    if isinstance(storage, LazyObject):
        if storage._wrapped is empty:
            storage._setup()
        return storage._wrapped
    return storage


def is_filesystem(storage) -> bool:
    return isinstance(unwrap(storage), FileSystemStorage)


def is_s3(storage) -> bool:
    return hasattr(unwrap(storage), "bucket_name") and hasattr(unwrap(storage), "connection")


# --- Errors ----------------------------------------------------------------------------------------------------------

_CREDENTIAL_CODES = {"InvalidAccessKeyId": "S3_ACCESS_KEY_ID", "SignatureDoesNotMatch": "S3_SECRET_ACCESS_KEY",
                     "InvalidToken": "S3_ACCESS_KEY_ID", "ExpiredToken": "S3_ACCESS_KEY_ID",
                     "AuthorizationHeaderMalformed": "S3_REGION"}


def explain(exc: BaseException, *, doing: str = "store the file") -> str:
    """One sentence for an object storage error, naming the setting that is most likely wrong."""
    bucket = getattr(settings, "S3_BUCKET", "") or "(none)"
    endpoint = getattr(settings, "S3_ENDPOINT_URL", "") or "AWS's default endpoint"
    if isinstance(exc, EndpointConnectionError) or _is_connection_error(exc):
        return (f"Object storage is unreachable: could not {doing} at {endpoint} (check S3_ENDPOINT_URL; "
                f"{_first_line(exc)}).")
    if isinstance(exc, NoCredentialsError):
        return f"Object storage has no credentials: could not {doing} (set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY)."
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in _CREDENTIAL_CODES:
            setting = _CREDENTIAL_CODES[code]
            return (f"Object storage refused the credentials ({code}): could not {doing} in bucket {bucket} "
                    f"(check {setting}).")
        if code in ("NoSuchBucket",) or (status == 404 and code in ("404", "NotFound")):
            return f"Object storage has no bucket {bucket}: could not {doing} (check S3_BUCKET, or create the bucket)."
        if code in ("AccessDenied", "AllAccessDisabled"):
            return (f"Object storage denied access to bucket {bucket} ({code}): could not {doing} (check S3_BUCKET "
                    "and that S3_ACCESS_KEY_ID may read and write it).")
        if status == 403:  # an answer to HEAD has no body to say why
            return (f"Object storage refused the request (403 Forbidden): could not {doing} in bucket {bucket} (check "
                    "S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, and that the key may use S3_BUCKET).")
        return f"Object storage failed ({code or status}): could not {doing} in bucket {bucket}: {_first_line(exc)}"
    return f"Object storage failed: could not {doing}: {_first_line(exc)}"


def _is_connection_error(exc):
    return isinstance(exc, BotoCoreError) and "connect" in type(exc).__name__.lower()


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def storage_errors():
    """The exception types object storage raises, besides OSError (a local disk)."""
    return (BotoCoreError, ClientError)


@contextlib.contextmanager
def named_errors(doing: str):
    """Re-raise boto3's errors as StorageUnavailable with the setting named."""
    try:
        yield
    except storage_errors() as exc:
        raise StorageUnavailable(explain(exc, doing=doing)) from exc


def check(storage=None) -> str:
    """Write, read back and delete a small probe object. Returns where it wrote; raises StorageUnavailable naming the
    setting at fault."""
    storage = unwrap(storage or storages["default"])
    name = f"portal-check/{uuid.uuid4().hex}.txt"
    body = b"image mode portal storage check\n"
    try:
        saved = storage.save(name, ContentFile(body))
        with storage.open(saved, "rb") as f:
            if f.read() != body:
                raise StorageUnavailable(f"Object storage returned other bytes than were written to {saved}.")
        storage.delete(saved)
    except storage_errors() as exc:
        raise StorageUnavailable(explain(exc, doing="write a probe object")) from exc
    except OSError as exc:
        raise StorageUnavailable(f"The media directory cannot be written: {exc} (check MEDIA_ROOT).") from exc
    if is_s3(storage):
        return f"s3 bucket {storage.bucket_name} at {settings.S3_ENDPOINT_URL or 'AWS'}"
    return f"directory {storage.location}"


def bucket_reachable() -> None:
    """For start-up: one listing of at most one key (nothing written). Raises StorageUnavailable naming the setting."""
    storage = unwrap(storages["default"])
    if not is_s3(storage):
        return
    with named_errors("list its objects"):  # not HEAD: its errors come without the reason
        storage.connection.meta.client.list_objects_v2(Bucket=storage.bucket_name, MaxKeys=1)


# --- Reading ---------------------------------------------------------------------------------------------------------


def read_range(storage, name: str, start: int, length: int) -> bytes:
    """`length` bytes of a stored object from `start`, fetching only those (an HTTP range request on S3)."""
    storage = unwrap(storage)
    if length <= 0:
        return b""
    if is_s3(storage):
        key = storage._normalize_name(name)  # the storage's own prefixing (S3_PREFIX)
        with named_errors("read an archived object"):
            response = storage.connection.meta.client.get_object(Bucket=storage.bucket_name, Key=key,
                                                                 Range=f"bytes={start}-{start + length - 1}")
            return response["Body"].read()
    with storage.open(name, "rb") as f:
        f.seek(start)
        return f.read(length)


# --- Downloads -------------------------------------------------------------------------------------------------------


def downloads_via() -> str:
    return settings.DOWNLOADS_VIA


def presigned_url(storage, name: str, *, filename: str, content_type: str) -> str:
    """A time-limited URL that fetches the object straight from object storage, as an attachment named `filename`.

    Signed for S3_PUBLIC_ENDPOINT_URL when set (browsers reach the storage by another name than the portal does)."""
    storage = unwrap(storage)
    public = getattr(settings, "S3_PUBLIC_ENDPOINT_URL", "")
    if public and public != storage.endpoint_url:
        signer = _public_signer(storage, public)
    else:
        signer = storage
    disposition = f"attachment; filename*=UTF-8''{quote(filename)}"
    return signer.url(name, parameters={"ResponseContentDisposition": disposition,
                                        "ResponseContentType": content_type},
                      expire=settings.S3_PRESIGN_SECONDS)


_signers: dict = {}


def _public_signer(storage, endpoint):
    """A copy of the storage that talks to `endpoint` (its own connections; signing needs no request)."""
    key = (id(storage), endpoint)
    if key not in _signers:
        signer = copy.copy(storage)  # S3Storage's __getstate__ leaves the connections behind
        signer.endpoint_url = endpoint
        _signers[key] = signer
    return _signers[key]


def download_response(storage, name: str, *, start: int, end: int, status: int, content_type: str,
                      filename: str, headers: dict):
    """The response that hands the client the bytes `start`..`end` of a stored file, after the caller checked access
    and answered HEAD and unsatisfiable ranges itself.

    - presigned: 302 to a presigned GET on object storage; the client repeats its Range there (S3 answers 206), and a
      resumed download comes back here for a fresh URL;
    - proxy: an empty response with `X-Accel-Redirect: /protected-media/<name>`; the proxy serves the file from
      its own view of MEDIA_ROOT, ranges and all (deploy/Caddyfile);
    - stream: the web process reads and sends it, 1 MiB at a time (make run, which has no proxy).
    """
    via = downloads_via()
    if via == "presigned":
        response = HttpResponseRedirect(presigned_url(storage, name, filename=filename, content_type=content_type))
        response["Cache-Control"] = "private, no-store"
        response["X-Checksum-Sha256"] = headers.get("X-Checksum-Sha256", "")
        return response
    if via == "proxy":
        response = HttpResponse(status=200, content_type=content_type)
        for key in ("Content-Disposition", "Cache-Control", "X-Content-Type-Options", "X-Checksum-Sha256"):
            if key in headers:
                response[key] = headers[key]
        response["X-Accel-Redirect"] = PROXY_PREFIX + quote(name)
        return response
    if is_s3(storage):
        chunks = _object_chunks(unwrap(storage), name, start, end)
        if chunks is None:
            return None
    else:
        try:
            chunks = _file_chunks(storage.open(name, "rb"), start, end - start + 1)
        except FileNotFoundError:
            return None
    return StreamingHttpResponse(chunks, status=status, content_type=content_type, headers=headers)


def _object_chunks(storage, name, start, end):
    """The object's bytes start..end, fetched with one ranged GET and passed on as they arrive (S3Storage.open would
    first copy the whole object to a temporary file)."""
    key = storage._normalize_name(name)  # the storage's own prefixing (S3_PREFIX)
    try:
        body = storage.connection.meta.client.get_object(Bucket=storage.bucket_name, Key=key,
                                                         Range=f"bytes={start}-{end}")["Body"]
    except storage_errors() as exc:
        if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise StorageUnavailable(explain(exc, doing="read the file")) from exc

    def chunks():
        try:
            yield from body.iter_chunks(STREAM_CHUNK)
        finally:
            body.close()

    return chunks()


def _file_chunks(file, start, length):
    try:
        file.seek(start)
        left = length
        while left > 0:
            data = file.read(min(STREAM_CHUNK, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        file.close()
