"""What packages a system has: one shell script that reads the package database of an image (in a container, by the
build pipeline) or of a host (over SSH, for what changed on it since it booted), and its parser.

rpm when the system has an rpm database, else dpkg's or apk's status file as text; {name: version}, with the epoch in
rpm's versions where there is one, and a second package of the same name keyed name.arch.
"""

PACKAGE_FORMATS = ("rpm", "dpkg", "apk")
PACKAGE_SCRIPT = r"""
if { [ -e /usr/lib/sysimage/rpm ] || [ -e /var/lib/rpm ]; } \
   && out=$(rpm -qa --qf '%{NAME}\t%|EPOCH?{%{EPOCH}:}:{}|%{VERSION}-%{RELEASE}\t%{ARCH}\n' 2>/dev/null); then
  echo '#format rpm'; printf '%s\n' "$out"
elif [ -f /var/lib/dpkg/status ]; then
  echo '#format dpkg'; cat /var/lib/dpkg/status
elif [ -f /lib/apk/db/installed ]; then
  echo '#format apk'; cat /lib/apk/db/installed
else
  echo '#format none'
fi
"""


def parse_packages(output: str) -> tuple[str, dict[str, str]]:
    """(format, {name: version}) from PACKAGE_SCRIPT's output."""
    lines = output.splitlines()
    header = next((i for i, line in enumerate(lines) if line.startswith("#format ")), None)
    if header is None:
        return "", {}
    fmt = lines[header].split()[1]
    body = lines[header + 1:]
    if fmt == "rpm":
        packages: dict[str, str] = {}
        for line in body:
            parts = line.split("\t")
            if len(parts) < 2 or not parts[0]:
                continue
            name, version = parts[0], parts[1]
            arch = parts[2] if len(parts) > 2 else ""
            key = name if name not in packages else f"{name}.{arch}"
            packages[key] = version
        return "rpm", packages
    if fmt == "dpkg":
        return "dpkg", _parse_stanzas(body, name_key="Package", version_key="Version",
                                      keep=lambda s: "installed" in s.get("Status", "install ok installed").split())
    if fmt == "apk":
        return "apk", _parse_stanzas(body, name_key="P", version_key="V", sep=":", keep=lambda s: True)
    return "", {}


def _parse_stanzas(lines, *, name_key, version_key, keep, sep=": "):
    packages, stanza = {}, {}

    def done():
        if stanza.get(name_key) and keep(stanza):
            packages[stanza[name_key]] = stanza.get(version_key, "")

    for line in lines:
        if not line.strip():
            done()
            stanza = {}
            continue
        if line[:1] in (" ", "\t"):
            continue
        key, found, value = line.partition(sep)
        if found:
            stanza[key.strip()] = value.strip()
    done()
    return packages
