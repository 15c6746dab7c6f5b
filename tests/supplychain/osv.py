"""A small advisory feed in OSV's real format (https://ossf.github.io/osv-schema/), written by the tests: Debian
advisories for the seed images' packages (tests/releases/fixtures.py), whose findings are known exactly."""

import json


def record(identifier, cve, package, fixed, *, severity="high", introduced="0", ecosystem="Debian:12",
           summary=""):
    return {
        "schema_version": "1.6.0", "id": identifier, "aliases": [cve], "modified": "2026-11-30T10:00:00Z",
        "published": "2026-11-29T10:00:00Z", "summary": summary or f"{package}: a flaw fixed in {fixed}",
        "affected": [{
            "package": {"ecosystem": ecosystem, "name": package},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": introduced}, {"fixed": fixed}]}],
            "ecosystem_specific": {"urgency": severity},
        }],
    }


# The seeds: 1.0 bash 5.1-2, openssl 3.0.11-1, curl 7.88.1-10; 1.1 bash 5.2.15-2, openssl 3.0.13-1, nginx 1.22.1-9;
# 1.2 bash 5.2.15-2, openssl 3.0.14-1, nginx 1.24.0-1, jq 1.6-2.
FEED = [
    record("DSA-9001-1", "CVE-2026-1001", "openssl", "3.0.13-1", severity="critical"),  # 1.0 only
    record("DSA-9002-1", "CVE-2026-1002", "bash", "5.2.15-3", introduced="5.2"),  # 1.1 and 1.2, not 5.1-2
    # As strings "1.22.1-9" > "1.22.1-10"; dpkg says 9 < 10: 1.1 is affected.
    record("DSA-9003-1", "CVE-2026-1003", "nginx", "1.22.1-10", severity="medium"),
    # An epoch: 7.88.1-10 (epoch 0) is older than 1:7.0-1.
    record("DSA-9004-1", "CVE-2026-1004", "curl", "1:7.0-1", severity="low"),
    # The same package name in an RPM distribution matches no dpkg image.
    record("RHSA-2026:9005", "CVE-2026-1005", "openssl", "1:3.2.0-1", ecosystem="Red Hat", severity="important"),
]
EXPECTED = {
    "1.0": {("CVE-2026-1001", "openssl", "3.0.13-1"), ("CVE-2026-1004", "curl", "1:7.0-1")},
    "1.1": {("CVE-2026-1002", "bash", "5.2.15-3"), ("CVE-2026-1003", "nginx", "1.22.1-10")},
    "1.2": {("CVE-2026-1002", "bash", "5.2.15-3")},
}
JQ_ADVISORY = record("DSA-9006-1", "CVE-2026-1006", "jq", "1.6-3", severity="critical")


def feed_bytes(records=FEED):
    return json.dumps(records).encode()


def csaf_vex(cve, *, fixed_purls, severity="Important", title=""):
    """A CSAF 2.0 VEX document in the shape Red Hat publishes: products in a branch tree with package URLs, a
    relationship putting each into a product stream, and the vulnerability's fixed products by their stream ids."""
    versions = [{"category": "product_version", "name": purl.split("/")[-1],
                 "product": {"name": purl, "product_id": f"p{i}",
                             "product_identification_helper": {"purl": purl}}} for i, purl in enumerate(fixed_purls)]
    return {
        "document": {"category": "csaf_vex", "csaf_version": "2.0", "title": title or f"{cve} advisory",
                     "aggregate_severity": {"namespace": "https://access.redhat.com/security/updates/classification/",
                                            "text": severity},
                     "publisher": {"category": "vendor", "name": "Red Hat Product Security",
                                   "namespace": "https://www.redhat.com"},
                     "tracking": {"id": cve, "status": "final", "version": "1",
                                  "initial_release_date": "2026-11-01T00:00:00+00:00",
                                  "current_release_date": "2026-11-02T00:00:00+00:00",
                                  "revision_history": [{"date": "2026-11-01T00:00:00+00:00", "number": "1",
                                                        "summary": "Initial version"}]}},
        "product_tree": {"branches": [{"category": "vendor", "name": "Red Hat", "branches": [
            {"category": "product_family", "name": "Red Hat Enterprise Linux", "branches": versions},
            {"category": "product_name", "name": "Red Hat Enterprise Linux AppStream (v. 9)",
             "product": {"name": "Red Hat Enterprise Linux AppStream (v. 9)", "product_id": "AppStream-9"}}]}],
            "relationships": [{"category": "default_component_of",
                               "full_product_name": {"name": f"p{i} as a component of RHEL 9",
                                                     "product_id": f"AppStream-9:p{i}"},
                               "product_reference": f"p{i}", "relates_to_product_reference": "AppStream-9"}
                              for i in range(len(fixed_purls))]},
        "vulnerabilities": [{"cve": cve, "title": title or f"a flaw in {cve}",
                             "product_status": {"fixed": [f"AppStream-9:p{i}" for i in range(len(fixed_purls))]},
                             "threats": [{"category": "impact", "details": severity}]}],
    }
