"""What people change on a simulated host after it booted: files in /etc, and packages in a transient /usr overlay.
Answers the commands hosts.runtime reads them with, in the formats a real host prints.

- `ostree admin config-diff`: "M    path", "A    path", "D    path", the path relative to /etc (ostree_diff_print);
- the package script of portal.packages (`sh -c ...`): "#format rpm" and a line per package, name, version and
  architecture separated by tabs, as `rpm -qa --qf` prints them;
- `bootc usr-overlay`: a writable /usr until the next boot (bootc's default is transient);
- `dnf install -y NAME...`: refused on a read-only /usr (the words of dnf5 on a bootc host), added to the overlay
  otherwise. A reboot drops the overlay and what was installed in it; /etc changes stay (ostree's three-way merge
  carries them into every new deployment);
- the script of `portal.ssh.etc_file` (`sh -c ... sh PATH N`): one side of a changed file, /etc/<path> as edited or
  /usr/etc/<path> as the image has it (IMAGE_ETC, or a line of defaults for any other path).

The state lives in the host's saved state (`HostState.runtime`): {"etc": {path: kind}, "etc_text": {path: text as
edited}, "layered": {name: version}, "overlay": bool}.

What the booted image ships: when the image has a package database the simulator can read as text (dpkg's status
file: a busybox-based test image cannot run a stand-in `rpm`, busybox's shell runs its own rpm applet first), the
simulator reads it and the image's /etc from the registry (its layers, whiteouts applied) once per digest, and then
answers as a host of that image: its packages (the same script output the build pipeline reads from the image), and
/etc compared with the image's /usr/etc, as ostree's config-diff does after the three-way merge (an edit that the new
image ships as it is stops being a change); `apt-get install` then installs into the overlay as dnf does. Any other
image (the demo images, an unreachable registry) has the same rpm packages (IMAGE_PACKAGES) and /etc (IMAGE_ETC).
"""

import json
import threading

from portal.etcfiles import ETC_FILE_SCRIPT
from portal.packages import PACKAGE_SCRIPT, parse_packages

from . import simregistry

DPKG_STATUS = "var/lib/dpkg/status"
LAYERED_VERSION = "1.0-1.fc42"
APT_READ_ONLY = ("E: Could not open lock file /var/lib/dpkg/lock-frontend - open (30: Read-only file system)")
_images = {}
_images_lock = threading.Lock()

IMAGE_PACKAGES = {
    "bash": "5.2.37-1.fc42", "bootc": "1.15.1-1.fc42", "chrony": "4.6.1-2.fc42", "coreutils": "9.6-2.fc42",
    "dnf5": "5.2.13.1-1.fc42", "kernel": "6.14.5-300.fc42", "openssh-server": "9.9p1-11.fc42",
    "podman": "5.4.2-1.fc42", "systemd": "257.5-2.fc42", "vim-minimal": "9.1.1275-1.fc42",
}
IMAGE_ETC = {
    "chrony.conf": "server 0.fedora.pool.ntp.org iburst\ndriftfile /var/lib/chrony/drift\nmakestep 1.0 3\nrtcsync\n",
    "ssh/sshd_config": "Include /etc/ssh/sshd_config.d/*.conf\nPermitRootLogin prohibit-password\n"
                       "PasswordAuthentication no\nSubsystem sftp /usr/libexec/openssh/sftp-server\n",
    "hosts": "127.0.0.1   localhost localhost.localdomain\n::1         localhost localhost.localdomain\n",
    "motd": "",
    # Fedora's stock policy: anything goes (bootc --enforce-container-sigpolicy refuses it).
    "containers/policy.json": '{\n    "default": [{"type": "insecureAcceptAnything"}],\n    "transports": {\n'
                              '        "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}\n    }\n}\n',
}
POLICY = "containers/policy.json"
READ_ONLY = ("error: This bootc system is configured to be read-only. Pass --transient to perform this and subsequent "
             "transactions in a transient overlay which will reset when the system reboots.")


def _state(machine):
    runtime = machine.state.runtime
    runtime.setdefault("etc", {})
    runtime.setdefault("etc_text", {})
    runtime.setdefault("layered", {})
    runtime.setdefault("overlay", False)
    return runtime


def image_content(machine):
    """{"status": dpkg's status file, "packages": {name: version}, "etc": {path: text}} of the booted image when it
    has a dpkg status file, else None. Read from the registry once per digest."""
    booted = machine.state.booted
    if booted is None or not booted.image or not (booted.digest or "").startswith("sha256:"):
        return None
    with _images_lock:
        if booted.digest in _images:
            return _images[booted.digest]
    try:
        files = simregistry.image_files(booted.image, booted.digest,
                                        lambda path: path == DPKG_STATUS or path.startswith("etc/"))
    except (simregistry.RegistryError, OSError, ValueError):
        files = {}
    content = None
    if DPKG_STATUS in files:
        status = files[DPKG_STATUS].decode("utf-8", "replace")
        content = {"status": status, "packages": parse_packages("#format dpkg\n" + status)[1],
                   "etc": {path.removeprefix("etc/"): data.decode("utf-8", "replace")
                           for path, data in files.items() if path.startswith("etc/")}}
    with _images_lock:
        _images[booted.digest] = content
    return content


def _image_etc(machine):
    content = image_content(machine)
    return content["etc"] if content is not None else None


def config_diff(machine):
    """{path: A, M or D} of /etc against the booted image's /usr/etc (what `ostree admin config-diff` lists)."""
    runtime, shipped = _state(machine), _image_etc(machine)
    if shipped is None:
        return dict(runtime["etc"])
    out = {}
    for path, kind in runtime["etc"].items():
        image_text = shipped.get(path)
        if kind == "D":
            if image_text is not None:
                out[path] = "D"
        elif image_text is None:
            out[path] = "A"
        elif runtime["etc_text"].get(path) != image_text:
            out[path] = "M"
    return out


def execute(machine, argv, error):
    """The output of one of these commands, or None when `argv` is none of them. `error(message, status)` makes the
    exception a failing command raises."""
    runtime = _state(machine)
    if argv == ["ostree", "admin", "config-diff"]:
        return "".join(f"{kind}    {path}\n" for path, kind in sorted(config_diff(machine).items()))
    if argv == ["sh", "-c", PACKAGE_SCRIPT]:
        content = image_content(machine)
        if content is not None:
            return "#format dpkg\n" + content["status"].rstrip("\n") + "\n\n" + "".join(
                f"Package: {name}\nStatus: install ok installed\nVersion: {version}\n\n"
                for name, version in sorted(runtime["layered"].items()))
        packages = {**IMAGE_PACKAGES, **runtime["layered"]}
        return "#format rpm\n" + "".join(f"{name}\t{version}\tx86_64\n" for name, version in sorted(packages.items()))
    if argv[:3] == ["sh", "-c", ETC_FILE_SCRIPT] and len(argv) == 6:
        return _etc_file(runtime, argv[4], int(argv[5]), _image_etc(machine))
    if argv in (["bootc", "usr-overlay"], ["bootc", "usroverlay"]):
        runtime["overlay"] = True
        machine.changed()
        return "Development mode enabled.  A writable overlayfs is now mounted on /usr.\n"
    if argv[:2] in (["dnf", "install"], ["apt-get", "install"]):
        names = [arg for arg in argv[2:] if not arg.startswith("-")]
        if not runtime["overlay"]:
            raise error(READ_ONLY if argv[0] == "dnf" else APT_READ_ONLY, 1 if argv[0] == "dnf" else 100)
        for name in names:
            runtime["layered"][name] = LAYERED_VERSION
        machine.changed()
        return "".join(f"Installing: {name}\n" for name in names) + "Complete!\n"
    return None


def usr_overlay(machine):
    """bootc status's `usrOverlay`: null, or the overlay's access mode and persistence."""
    return {"accessMode": "readWrite", "persistence": "transient"} if _state(machine)["overlay"] else None


def on_boot(machine):
    runtime = _state(machine)
    runtime["overlay"] = False
    runtime["layered"] = {}


def _etc_file(runtime, where, limit, shipped=None):
    """What the etc_file script prints for /etc/<path> or /usr/etc/<path> (`shipped`: the booted image's /etc, when
    the simulator could read it)."""
    image = where.startswith("/usr/etc/")
    path = where.removeprefix("/usr").removeprefix("/etc/")
    kind = runtime["etc"].get(path)
    if shipped is not None:
        text = shipped.get(path) if image else (None if kind == "D" else runtime["etc_text"].get(path, shipped.get(path)))
    elif image:
        text = None if kind == "A" else IMAGE_ETC.get(path, f"# {path} as the image ships it\n")
    else:
        text = None if kind == "D" else runtime["etc_text"].get(path, IMAGE_ETC.get(path))
    if text is None:
        return "#missing\n"
    return f"#file {len(text.encode())}\n" + text.encode()[:limit].decode("utf-8", "replace")


def edit_etc(machine, path, kind="M", text=None):
    """Someone changes /etc/<path> on the host (kind M modified, A added, D deleted; `text`: the file as it is now,
    else a line added to the image's); "" undoes it."""
    runtime = _state(machine)
    path = path.removeprefix("/etc/").lstrip("/")
    shipped = _image_etc(machine)
    if kind:
        runtime["etc"][path] = kind
        if kind == "D":
            runtime["etc_text"].pop(path, None)
        else:
            before = (shipped if shipped is not None else IMAGE_ETC).get(path, "") if kind == "M" else ""
            runtime["etc_text"][path] = text if text is not None else (
                before + f"# {'changed' if kind == 'M' else 'added'} on the host\n")
    else:
        runtime["etc"].pop(path, None)
        runtime["etc_text"].pop(path, None)
    machine.changed()


def container_policy_refusal(machine):
    """Why bootc --enforce-container-sigpolicy refuses this host's /etc/containers/policy.json (ostree-ext's
    container_policy_is_default_insecure: a global default of exactly one insecureAcceptAnything), or ""."""
    runtime = _state(machine)
    if runtime["etc"].get(POLICY) == "D":
        return "Opening /etc/containers/policy.json: No such file or directory (os error 2)"
    text = runtime["etc_text"].get(POLICY, IMAGE_ETC[POLICY])
    try:
        default = json.loads(text).get("default") or []
    except (ValueError, AttributeError) as exc:
        return f"Parsing /etc/containers/policy.json: {exc}"
    if len(default) == 1 and isinstance(default[0], dict) and default[0].get("type") == "insecureAcceptAnything":
        return "containers-policy.json specifies a default of `insecureAcceptAnything`; refusing usage"
    return ""
