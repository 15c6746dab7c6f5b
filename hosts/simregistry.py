"""The registry as a simulated host sees it: resolving a reference over the registry's HTTP API (v2), as `bootc
upgrade` does (a manifest list resolved to the host's architecture), and pushing a tiny multi-arch bootc-labelled
image without podman, for `make run` and the tests."""

import gzip
import hashlib
import io
import json
import tarfile
import urllib.error
import urllib.request

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
INDEX_TYPES = MANIFEST_TYPES[:2]


class RegistryError(Exception):
    pass


def split_reference(reference):
    """`host:port/repo/name:tag` or `...@sha256:...` -> (registry, repository, tag or digest)."""
    name, digest = reference, None
    if "@" in reference:
        name, digest = reference.split("@", 1)
    registry, _, rest = name.partition("/")
    if not rest or ("." not in registry and ":" not in registry and registry != "localhost"):
        raise RegistryError(f"{reference}: not a fully qualified reference (registry/repository:tag)")
    repository, tag = rest, "latest"
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        repository, tag = rest.rsplit(":", 1)
    return registry, repository, digest or tag


def _http(method, url, *, data=None, headers=None, timeout=10):
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        # Reviewed: every caller builds an http:// URL of the loopback registry the simulated hosts pull from.
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 # nosec B310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except (urllib.error.URLError, OSError) as exc:
        raise RegistryError(f"cannot reach {url.split('/v2/')[0]}: {getattr(exc, 'reason', exc)}") from None


def _base(registry):
    host = registry.split(":")[0]
    scheme = "http" if host in ("127.0.0.1", "localhost", "::1") else "https"
    return f"{scheme}://{registry}/v2/"


def resolve_image(reference, architecture="amd64"):
    """What `bootc upgrade` would pull: {digest (per-arch manifest), version, timestamp, architecture}."""
    registry, repository, ref = split_reference(reference)
    url = f"{_base(registry)}{repository}/manifests/{ref}"
    status, headers, body = _http("GET", url, headers={"Accept": ", ".join(MANIFEST_TYPES)})
    if status == 404:
        raise RegistryError(f"{reference}: manifest unknown")
    if status != 200:
        raise RegistryError(f"{reference}: registry answered HTTP {status}")
    manifest = json.loads(body)
    digest = headers.get("Docker-Content-Digest") or "sha256:" + hashlib.sha256(body).hexdigest()
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        chosen = next((m for m in manifest.get("manifests", [])
                       if m.get("platform", {}).get("architecture") == architecture), None)
        if chosen is None:
            raise RegistryError(f"{reference}: no image for architecture {architecture}")
        digest = chosen["digest"]
        status, headers, body = _http("GET", f"{_base(registry)}{repository}/manifests/{digest}",
                                      headers={"Accept": ", ".join(MANIFEST_TYPES)})
        if status != 200:
            raise RegistryError(f"{reference}: manifest {digest} unknown")
        manifest = json.loads(body)
    config_digest = manifest.get("config", {}).get("digest")
    labels, created = {}, None
    if config_digest:
        status, _, body = _http("GET", f"{_base(registry)}{repository}/blobs/{config_digest}")
        if status == 200:
            config = json.loads(body)
            labels = (config.get("config") or {}).get("Labels") or {}
            created = config.get("created")
    return {
        "digest": digest,
        "version": labels.get("org.opencontainers.image.version") or labels.get("version"),
        "timestamp": created,
        "architecture": architecture,
    }


IMAGE_FILE_MAX = 65536


def image_files(reference, digest, wanted):
    """{path: bytes} of the regular files of image `digest` (in `reference`'s repository) for which `wanted(path)` is
    true (paths without a leading slash), the layers applied in order with their whiteouts: what a host booting the
    image has under /usr and, for etc/, under /usr/etc. Files over IMAGE_FILE_MAX are cut."""
    registry, repository, _ = split_reference(reference)
    status, _, body = _http("GET", f"{_base(registry)}{repository}/manifests/{digest}",
                            headers={"Accept": ", ".join(MANIFEST_TYPES)})
    if status != 200:
        raise RegistryError(f"{reference}@{digest}: manifest answered HTTP {status}")
    files = {}
    for layer in json.loads(body).get("layers", []):
        status, _, blob = _http("GET", f"{_base(registry)}{repository}/blobs/{layer['digest']}", timeout=30)
        if status != 200:
            raise RegistryError(f"{reference}@{digest}: layer {layer['digest']} answered HTTP {status}")
        if blob[:2] == b"\x1f\x8b":
            blob = gzip.decompress(blob)
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:") as tar:
            for member in tar:
                path = member.name.removeprefix("./").lstrip("/")
                head, _, name = path.rpartition("/")
                if name.startswith(".wh."):
                    gone = f"{head}/{name[4:]}" if head else name[4:]
                    for known in [p for p in files if p == gone or p.startswith(gone + "/")]:
                        del files[known]
                elif member.isfile() and wanted(path):
                    files[path] = tar.extractfile(member).read(IMAGE_FILE_MAX)
    return files


def push_demo_image(registry, repository, *, version, tags, architectures=("amd64", "arm64")):
    """Push a tiny multi-arch bootc-labelled image straight through the registry API; returns {arch: digest, "": index}.

    Used to give `make run` and the tests real tags to track without podman. Same version and architectures give the same
    digests, so pushing again is idempotent.
    """
    base = _base(registry) + repository

    def upload(blob):
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        status, _, _ = _http("HEAD", f"{base}/blobs/{digest}")
        if status == 200:
            return digest
        status, headers, _ = _http("POST", f"{base}/blobs/uploads/")
        if status not in (201, 202):
            raise RegistryError(f"upload refused: HTTP {status}")
        location = headers.get("Location", "")
        if location.startswith("/"):
            location = f"{_base(registry)[:-4]}{location}"
        separator = "&" if "?" in location else "?"
        status, _, _ = _http("PUT", f"{location}{separator}digest={digest}", data=blob,
                             headers={"Content-Type": "application/octet-stream"})
        if status not in (201, 204):
            raise RegistryError(f"blob upload failed: HTTP {status}")
        return digest

    def put_manifest(ref, body, media_type):
        status, _, text = _http("PUT", f"{base}/manifests/{ref}", data=body, headers={"Content-Type": media_type})
        if status not in (201, 200):
            raise RegistryError(f"manifest push failed: HTTP {status} {text[:200]!r}")

    digests = {}
    entries = []
    for arch in architectures:
        layer = _tiny_layer(f"{repository} {version} {arch}\n")
        layer_digest = upload(layer)
        diff_id = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
        config = json.dumps({
            "architecture": arch, "os": "linux", "created": "2026-01-01T00:00:00Z",
            "config": {"Labels": {"containers.bootc": "1", "ostree.bootable": "1",
                                  "org.opencontainers.image.version": version}},
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }, sort_keys=True).encode()
        config_digest = upload(config)
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": MANIFEST_TYPES[2],
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest,
                        "size": len(layer)}],
        }, sort_keys=True).encode()
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        put_manifest(digest, manifest, MANIFEST_TYPES[2])
        digests[arch] = digest
        entries.append({"mediaType": MANIFEST_TYPES[2], "digest": digest, "size": len(manifest),
                        "platform": {"architecture": arch, "os": "linux"}})
    index = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPES[0], "manifests": entries},
                       sort_keys=True).encode()
    digests[""] = "sha256:" + hashlib.sha256(index).hexdigest()
    put_manifest(digests[""], index, MANIFEST_TYPES[0])
    for tag in tags:
        put_manifest(tag, index, MANIFEST_TYPES[0])
    return digests


def _tiny_layer(text):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = text.encode()
        info = tarfile.TarInfo("etc/os-release-demo")
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)
