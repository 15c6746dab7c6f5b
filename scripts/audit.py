#!/usr/bin/env python3
"""`make audit`: the pinned dependencies checked for known vulnerabilities with pip-audit, saying plainly what was
checked.

pip-audit asks an advisory database about each pinned package (PyPI's JSON API by default, or OSV). When that database
cannot be reached, pip-audit itself reports "No known vulnerabilities found" and succeeds, having checked nothing: on
a machine whose only network is a package mirror, PyPI's per-version JSON answers 404 and every package is skipped as
"not found". So this script reads pip-audit's JSON report and decides:

- a known vulnerability in any package: exit 1, naming the package, the advisory and the fixed versions;
- the database unreachable (pip-audit failed to ask it, or skipped every package): says so in capitals, nothing was
  audited, and exits 0 so that CI does not fail for a network it does not have (2 with --strict, for a CI that has
  the network and must not pass unaudited);
- some packages skipped: names them and says how many were audited;
- otherwise: how many packages were audited and found clean.

    scripts/audit.py [--strict] [--service pypi|osv] [--osv-url URL] [--cache-dir DIR] [LOCK ...]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
UNREACHABLE = 2


def verdict(report, *, strict=False):
    """(exit status, lines to print) for pip-audit's JSON report (None when pip-audit produced none)."""
    if report is None:
        return None
    dependencies = report.get("dependencies", [])
    vulnerable = [d for d in dependencies if d.get("vulns")]
    skipped = [d for d in dependencies if d.get("skip_reason")]
    audited = len(dependencies) - len(skipped)
    lines = []
    for dependency in vulnerable:
        for vuln in dependency["vulns"]:
            aliases = f" ({', '.join(vuln['aliases'])})" if vuln.get("aliases") else ""
            fixed = ", ".join(vuln.get("fix_versions") or []) or "no fixed version yet"
            lines.append(f"VULNERABLE: {dependency['name']} {dependency['version']}: {vuln['id']}{aliases}, "
                         f"fixed in {fixed}. {vuln.get('description', '')}".rstrip())
    if dependencies and not audited:
        lines.append(f"ADVISORY DATABASE UNREACHABLE: none of the {len(dependencies)} pinned packages could be "
                     f"audited (pip-audit: \"{skipped[0]['skip_reason']}\", and the same for every package). "
                     "Nothing was checked.")
        return (1 if vulnerable else UNREACHABLE if strict else 0), lines
    if skipped:
        lines.append(f"{len(skipped)} of {len(dependencies)} packages could not be audited: "
                     + "; ".join(f"{d['name']} ({d['skip_reason']})" for d in skipped))
    if vulnerable:
        lines.append(f"{sum(len(d['vulns']) for d in vulnerable)} known vulnerabilities in {len(vulnerable)} of the "
                     f"{audited} packages audited.")
        return 1, lines
    lines.append(f"No known vulnerabilities in the {audited} packages audited.")
    return 0, lines


def audit(lock, *, service, osv_url, cache_dir, strict):
    with tempfile.TemporaryDirectory() as work:
        out = Path(work) / "report.json"
        argv = [sys.executable, "-m", "pip_audit", "--requirement", str(lock), "--disable-pip", "--format", "json",
                "--output", str(out), "--progress-spinner", "off", "--vulnerability-service", service]
        if osv_url:
            argv += ["--osv-url", osv_url]
        if cache_dir:
            argv += ["--cache-dir", cache_dir]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
        report = json.loads(out.read_text()) if out.exists() and out.stat().st_size else None
    decided = verdict(report, strict=strict)
    if decided is None:
        errors = [line for line in done.stderr.splitlines() if line.strip() and "--no-deps" not in line]
        reason = errors[-1] if errors else f"pip-audit exited with status {done.returncode} and no report"
        return (UNREACHABLE if strict else 0), [
            f"ADVISORY DATABASE UNREACHABLE: pip-audit could not ask {service} ({reason}). Nothing was checked."]
    return decided


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("locks", nargs="*", default=["requirements-dev.lock"],
                        help="pinned, hashed requirement files (default: requirements-dev.lock, which holds them all)")
    parser.add_argument("--strict", action="store_true", help="exit 2 when the advisory database cannot be reached")
    parser.add_argument("--service", choices=["pypi", "osv"], default="pypi")
    parser.add_argument("--osv-url", default="")
    parser.add_argument("--cache-dir", default="")
    args = parser.parse_args()
    statuses = []
    for lock in args.locks:
        status, lines = audit(ROOT / lock, service=args.service, osv_url=args.osv_url, cache_dir=args.cache_dir,
                              strict=args.strict)
        print(f"pip-audit {lock} ({args.service}):")
        for line in lines:
            print(f"  {line}")
        statuses.append(status)
    return 1 if 1 in statuses else max(statuses, default=0)


if __name__ == "__main__":
    sys.exit(main())
