"""Advisories (OSV JSON, and CSAF 2.0 documents such as Red Hat's VEX) and which builds they affect.

A package is affected when its installed version falls in one of the advisory's ranges, compared with the rules of its
own ecosystem: dpkg's for Debian and Ubuntu, rpm's for the RPM distributions, apk's for Alpine (univers, never string
comparison: 1.10 > 1.9, 1:1.0 > 2.0, 1.0~rc1 < 1.0). Matching happens when a page asks, against the packages the
portal read from each image, so a feed update changes what every digest shows with no rebuild.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
import zlib
from dataclasses import dataclass

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.dateparse import parse_datetime
from packageurl import PackageURL

from .models import SEVERITY_ORDER, Advisory, AffectedPackage, Severity

log = logging.getLogger(__name__)

# The version class of each package format, named in univers.versions (imported where versions are compared).
VERSION_CLASSES = {"dpkg": "DebianVersion", "rpm": "RpmVersion", "apk": "AlpineLinuxVersion"}

# OSV ecosystem (before any ":release") -> the package format of the images it describes.
ECOSYSTEMS = {
    "Debian": "dpkg", "Ubuntu": "dpkg",
    "Red Hat": "rpm", "Rocky Linux": "rpm", "AlmaLinux": "rpm", "openSUSE": "rpm", "SUSE": "rpm", "Mageia": "rpm",
    "openEuler": "rpm", "Azure Linux": "rpm", "CentOS": "rpm", "Fedora": "rpm",
    "Alpine": "apk",
}

SEVERITY_WORDS = {"critical": Severity.CRITICAL, "important": Severity.HIGH, "high": Severity.HIGH,
                  "moderate": Severity.MEDIUM, "medium": Severity.MEDIUM, "low": Severity.LOW,
                  "negligible": Severity.LOW, "unimportant": Severity.LOW}


def parse_osv(data: bytes) -> list[dict]:
    """The OSV records in `data`: one JSON record, a JSON list of them, or a zip of .json records (how OSV publishes
    each ecosystem's `all.zip`); a CSAF 2.0 document (or a list or zip of them) is read as the OSV records it amounts
    to (`csaf_records`). Raises ValidationError naming what is wrong; parses everything before anything is stored."""
    limit = settings.SUPPLY_CHAIN_FEED_MAX_BYTES
    if len(data) > limit:
        raise ValidationError(f"The feed is {len(data):,} bytes; the portal takes feeds up to {limit:,} bytes "
                              "(SUPPLY_CHAIN_FEED_MAX_BYTES). Split it per ecosystem or release.")
    try:
        records = _parse(data, limit)
        for record in records:
            _check(record)
    except (TypeError, AttributeError, KeyError, IndexError) as exc:
        # A feed is not trusted: a shape the parser did not expect is a refusal that names it, never a server error.
        raise ValidationError(f"The feed is not OSV or CSAF as the portal reads them ({type(exc).__name__}: "
                              f"{exc}).") from None
    if _holds_nul(records):
        raise ValidationError("The feed holds a NUL character (\\u0000), which the database cannot store.")
    return list({record["id"]: record for record in records}.values())  # a repeated id: the last one counts


def _parse(data: bytes, limit: int) -> list[dict]:
    if data[:4] == b"PK\x03\x04":
        records = []
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                total = sum(info.file_size for info in archive.infolist())
                if total > limit:
                    raise ValidationError(f"The zip unpacks to {total:,} bytes; the limit is {limit:,} "
                                          "(SUPPLY_CHAIN_FEED_MAX_BYTES).")
                for info in archive.infolist():
                    if info.filename.endswith(".json"):
                        records.extend(_records(archive.read(info), info.filename))
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise ValidationError(f"The feed looks like a zip but is not one ({exc}).") from None
        except (NotImplementedError, RuntimeError) as exc:  # another compression method; an encrypted entry
            raise ValidationError(f"The zip cannot be read ({exc}).") from None
    else:
        records = _records(data, "the feed")
    if not records:
        raise ValidationError("The feed holds no OSV records.")
    return records


def _holds_nul(value) -> bool:
    """Whether a string anywhere in the parsed JSON `value` holds a NUL, which PostgreSQL's text cannot store."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _records(data: bytes, where: str) -> list[dict]:
    try:
        parsed = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"{where} is not JSON ({exc}).") from None
    except RecursionError:
        raise ValidationError(f"{where} is JSON nested too deeply to be a feed.") from None
    records = parsed if isinstance(parsed, list) else [parsed]
    if not all(isinstance(record, dict) for record in records):
        raise ValidationError(f"{where} is not OSV: expected a record (a JSON object) or a list of them.")
    return [osv for record in records for osv in (csaf_records(record, where) if "document" in record else [record])]


# --- CSAF 2.0 --------------------------------------------------------------------------------------------------------

PURL_ECOSYSTEMS = {"rpm": "Red Hat", "deb": "Debian", "apk": "Alpine"}


def csaf_records(document: dict, where: str = "the document") -> list[dict]:
    """A CSAF 2.0 document (a security advisory or a VEX, as Red Hat publishes them) as OSV records: one per
    vulnerability, whose affected packages are the products it lists as fixed, identified by their package URL
    (`pkg:rpm/redhat/openssl@3.0.7-28.el9?epoch=1`: fixed in 1:3.0.7-28.el9). Products without a package URL, or
    "known affected" with no fixed version (which names a product stream, not a version), are left out."""
    meta = document.get("document")
    if not isinstance(meta, dict) or not str(meta.get("csaf_version", "")).startswith("2."):
        raise ValidationError(f"{where} has a \"document\" but is not CSAF 2.0 (no document.csaf_version 2.x).")
    purls = {}

    def walk(branches):
        for branch in branches or []:
            if not isinstance(branch, dict):
                continue
            product = branch.get("product") or {}
            helper = product.get("product_identification_helper") or {} if isinstance(product, dict) else {}
            if isinstance(helper, dict) and isinstance(helper.get("purl"), str):
                purls[product.get("product_id")] = helper["purl"]
            walk(branch.get("branches"))

    tree = document.get("product_tree") or {}
    walk(tree.get("branches"))
    for product in tree.get("full_product_names") or []:
        helper = product.get("product_identification_helper") or {}
        if isinstance(helper.get("purl"), str):
            purls[product.get("product_id")] = helper["purl"]
    for relation in tree.get("relationships") or []:
        full = (relation.get("full_product_name") or {}).get("product_id")
        if full and relation.get("product_reference") in purls:
            purls[full] = purls[relation["product_reference"]]
    aggregate = (meta.get("aggregate_severity") or {}).get("text", "")
    tracking = str((meta.get("tracking") or {}).get("id") or "")
    records = []
    for vulnerability in document.get("vulnerabilities") or []:
        if not isinstance(vulnerability, dict):
            raise ValidationError(f"{where}: a vulnerability is not a JSON object.")
        cve = str(vulnerability.get("cve") or "")
        identifier = cve or tracking
        if not identifier:
            raise ValidationError(f"{where}: a vulnerability has no CVE and the document no tracking id.")
        impact = next((threat.get("details") for threat in vulnerability.get("threats") or []
                       if isinstance(threat, dict) and threat.get("category") == "impact"), "") or aggregate
        fixed = {}
        for product_id in (vulnerability.get("product_status") or {}).get("fixed") or []:
            parsed = _purl(purls.get(product_id))
            if parsed is not None and parsed[1] not in fixed:
                fixed[parsed[1]] = parsed
        records.append({
            "id": identifier, "aliases": [alias for alias in (cve, tracking) if alias and alias != identifier],
            "summary": str(vulnerability.get("title") or meta.get("title") or "")[:500],
            "database_specific": {"severity": str(impact).lower()},
            "affected": [{"package": {"ecosystem": PURL_ECOSYSTEMS[kind], "name": name},
                          "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": version}]}]}
                         for kind, name, version in fixed.values()],
        })
    if not records:
        raise ValidationError(f"{where} is CSAF but lists no vulnerability.")
    return records


def _purl(text) -> tuple[str, str, str] | None:
    """(purl type, package name, version with its epoch) of a package URL the portal can match, else None."""
    if not isinstance(text, str):
        return None
    try:
        purl = PackageURL.from_string(text)
    except ValueError:
        return None
    if purl.type not in PURL_ECOSYSTEMS or not purl.version or (purl.qualifiers or {}).get("arch") == "src":
        return None
    epoch = (purl.qualifiers or {}).get("epoch")
    return purl.type, purl.name, f"{epoch}:{purl.version}" if epoch and epoch != "0" else purl.version


def _check(record: dict) -> None:
    identifier = record.get("id")
    if not isinstance(identifier, str) or not identifier:
        raise ValidationError("An OSV record has no \"id\": this is not an OSV feed.")
    affected = record.get("affected", [])
    if not isinstance(affected, list):
        raise ValidationError(f"{identifier}: \"affected\" must be a list.")
    if not isinstance(record.get("aliases") or [], list):
        raise ValidationError(f"{identifier}: \"aliases\" must be a list.")
    for entry in affected:
        package = entry.get("package") if isinstance(entry, dict) else None
        if not isinstance(package, dict) or not isinstance(package.get("name"), str) or not package["name"]:
            raise ValidationError(f"{identifier}: an \"affected\" entry has no package name.")
        for key in ("ranges", "versions"):
            if not isinstance(entry.get(key) or [], list):
                raise ValidationError(f"{identifier}: \"{key}\" of {package['name']} must be a list.")
        for range_ in entry.get("ranges") or []:
            if not isinstance(range_, dict) or not isinstance(range_.get("events"), list):
                raise ValidationError(f"{identifier}: a range of {package['name']} has no events.")


def severity_of(record: dict) -> str:
    """The severity a distribution gave (database_specific / ecosystem_specific), in the portal's words."""
    for holder in [record.get("database_specific") or {}] + [
            entry.get(key) or {} for entry in record.get("affected") or [] if isinstance(entry, dict)
            for key in ("ecosystem_specific", "database_specific")]:
        if not isinstance(holder, dict):
            continue
        for key in ("severity", "urgency"):
            word = holder.get(key)
            if isinstance(word, str) and word.lower() in SEVERITY_WORDS:
                return SEVERITY_WORDS[word.lower()]
    return Severity.UNKNOWN


def _pairs(events: list[dict]) -> list[dict]:
    """OSV's ordered events as [{introduced, fixed}] intervals ("fixed" empty while unfixed)."""
    pairs, current = [], None
    for event in events:
        if not isinstance(event, dict):
            continue
        if "introduced" in event:
            if current is not None:
                pairs.append(current)
            current = {"introduced": str(event["introduced"]), "fixed": ""}
        elif "fixed" in event and current is not None:
            current["fixed"] = str(event["fixed"])
            pairs.append(current)
            current = None
    if current is not None:
        pairs.append(current)
    return pairs


def store(feed, records: list[dict]) -> int:
    """Write the records' advisories and affected packages for `feed` (in the caller's transaction)."""
    count = 0
    affected_rows = []
    for record in records:
        aliases = [alias for alias in record.get("aliases") or [] if isinstance(alias, str)][:50]
        advisory = Advisory.objects.create(
            feed=feed, identifier=record["id"][:100], aliases=aliases, summary=str(record.get("summary") or "")[:500],
            severity=severity_of(record), published=_when(record.get("published")))
        count += 1
        for entry in record.get("affected") or []:
            ecosystem = str(entry["package"].get("ecosystem") or "").split(":", 1)[0]
            package_format = ECOSYSTEMS.get(ecosystem)
            if package_format is None:
                continue
            ranges = [pair for range_ in entry.get("ranges") or [] if range_.get("type") in ("ECOSYSTEM", None)
                      for pair in _pairs(range_["events"])]
            affected_rows.append(AffectedPackage(advisory=advisory, package_format=package_format,
                                                 name=entry["package"]["name"][:200], ranges=ranges,
                                                 versions=[str(v) for v in entry.get("versions") or []][:1000]))
    AffectedPackage.objects.bulk_create(affected_rows, batch_size=1000)
    return count


def _when(value):
    try:
        return parse_datetime(str(value or ""))
    except ValueError:  # well-formed but impossible (month 13): the date is left out, not the advisory
        return None


# --- Matching --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    advisory: Advisory
    package: str
    installed: str
    fixed: str  # "" while no fixed version is known


def affected_by(package_format: str, installed: str, ranges: list[dict], listed: list[str]) -> tuple[bool, str]:
    """(whether `installed` is affected, the version that fixes it) under the ecosystem's comparison rules."""
    if installed in listed:
        return True, ""
    if package_format not in VERSION_CLASSES:
        return False, ""
    # univers is heavy (a tenth of a second to import): loaded by the path that compares versions, not at start-up.
    from univers import versions

    version_class = getattr(versions, VERSION_CLASSES[package_format])
    try:
        version = version_class(installed)
        for pair in ranges:
            introduced, fixed = pair.get("introduced") or "0", pair.get("fixed") or ""
            if introduced != "0" and version < version_class(introduced):
                continue
            if fixed and not version < version_class(fixed):
                continue
            return True, fixed
    except (ValueError, TypeError) as exc:  # univers refuses versions its ecosystem could not have written
        log.info("cannot compare %s version %r with an advisory's range: %s", package_format, installed, exc)
    return False, ""


def findings_for(build) -> list[Finding]:
    """The advisories that affect `build`'s packages, most severe first (one query, however many advisories)."""
    packages = build.packages or {}
    if not build.package_format or not packages:
        return []
    rows = AffectedPackage.objects.filter(package_format=build.package_format, name__in=list(packages)) \
        .select_related("advisory")
    found = {}
    for row in rows:
        installed = packages[row.name]
        hit, fixed = affected_by(build.package_format, installed, row.ranges, row.versions)
        key = (row.advisory.identifier, row.name)
        if hit and key not in found:
            found[key] = Finding(advisory=row.advisory, package=row.name, installed=installed, fixed=fixed)
    return sorted(found.values(), key=lambda f: (SEVERITY_ORDER.index(f.advisory.severity), f.advisory.identifier,
                                                  f.package))


def severity_counts(findings: list[Finding]) -> list[tuple[str, str, int]]:
    """[(severity, label, count)] in order of severity, for the badges."""
    return [(severity.value, severity.label, sum(1 for f in findings if f.advisory.severity == severity))
            for severity in SEVERITY_ORDER if any(f.advisory.severity == severity for f in findings)]
