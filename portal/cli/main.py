"""`imp`'s entry point: the parser (argparse) that names each command's function in `commands.py`, and the output
those functions write through."""

import argparse
import json
import sys

from . import commands, config, exits
from .client import ApiError, Client


class Output:
    """Human text to stdout by default; with --json, JSON documents to stdout and everything for people to stderr."""

    def __init__(self, as_json: bool, stdout=None, stderr=None):
        self.as_json = as_json
        self.stdout, self.stderr = stdout or sys.stdout, stderr or sys.stderr

    def result(self, data, human):
        """The command's answer: `data` as JSON, or the lines `human(data)` returns."""
        if self.as_json:
            self.stdout.write(json.dumps(data, indent=None, sort_keys=True) + "\n")
        else:
            for line in human(data):
                self.stdout.write(line + "\n")
        self.stdout.flush()

    def info(self, text):
        """Progress for people: stdout in human mode, stderr with --json (stdout stays parseable)."""
        stream = self.stderr if self.as_json else self.stdout
        stream.write(text + "\n")
        stream.flush()

    def log_lines(self, first, lines):
        stream = self.stderr if self.as_json else self.stdout
        stream.write("".join(line + "\n" for line in lines))
        stream.flush()

    def error(self, text):
        self.stderr.write(f"imp: {text}\n")
        self.stderr.flush()


# --- the parser ------------------------------------------------------------------------------------------------------


def _waiting(parser, *, follow=True):
    parser.add_argument("--wait", action="store_true", help="wait until it has finished; exit 1 if it failed")
    if follow:
        parser.add_argument("--follow", action="store_true", help="stream the log while waiting (implies --wait)")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="give up waiting (exit 7)")
    parser.add_argument("--interval", type=float, default=2.0, metavar="SECONDS", help="how often to ask (default 2)")


def _listing(parser):
    parser.add_argument("--team", help="only this team's (slug)")
    parser.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")


def build_parser():
    epilog = "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in exits.DESCRIPTIONS.items())
    parser = argparse.ArgumentParser(
        prog="imp", description="The image mode portal from the command line. Reads IMP_URL and IMP_TOKEN, or the "
                                "config file `imp login` writes (~/.config/imp/config.toml).",
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="the portal's address (default: IMP_URL, then the config file)")
    parser.add_argument("--json", action="store_true", help="print JSON on stdout (progress and logs go to stderr)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("login", help="check a token and store it with the URL in the config file (mode 0600)")
    p.add_argument("--token-stdin", action="store_true", help="read the token from stdin instead of prompting")
    p.set_defaults(func=commands.cmd_login, needs_client=False)

    p = sub.add_parser("whoami", help="the token's user, team and scopes")
    p.set_defaults(func=commands.cmd_whoami)

    p = sub.add_parser("build", help="build a definition's revision (--wait, --follow to stream the log)")
    p.add_argument("definition", help="TEAM/NAME, NAME or id of the image definition")
    p.add_argument("--revision", type=int, help="revision number (default: the current one)")
    p.add_argument("--containerfile", metavar="PATH", help="save this Containerfile as a new revision and build it")
    p.add_argument("--message", help="with --containerfile: the revision's message (e.g. the commit)")
    p.add_argument("--platform", help="one platform, e.g. linux/amd64 (default: all of the definition's)")
    _waiting(p)
    p.set_defaults(func=commands.cmd_build)

    p = sub.add_parser("builds", help="show a build")
    bsub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    q = bsub.add_parser("show", help="a build's status, digest and failure")
    q.add_argument("id", type=int)
    q.set_defaults(func=commands.cmd_build_show)

    p = sub.add_parser("runs", help="runs: show, follow a log")
    rsub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    q = rsub.add_parser("show", help="a run's status")
    q.add_argument("id", type=int)
    q.set_defaults(func=commands.cmd_runs_show)
    q = rsub.add_parser("follow", help="stream a run's log until it ends; exit 1 unless it succeeded")
    q.add_argument("id", type=int)
    q.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    q.set_defaults(func=commands.cmd_runs_follow)

    p = sub.add_parser("promote", help="ask for a build's digest to go to a stage")
    p.add_argument("definition", help="TEAM/NAME, NAME or id of the image definition")
    p.add_argument("--to", required=True, metavar="STAGE", help="the stage (name or id)")
    p.add_argument("--build", type=int, help="the build's id")
    p.add_argument("--digest", help="or the digest, sha256:... (one of the definition's builds)")
    p.add_argument("--reason", required=True, help="why (approvers read it)")
    p.add_argument("--emergency", metavar="REASON", help="emergency override during a freeze or outside a window")
    p.add_argument("--roll-forward", action="store_true", help="move a stage on that is pinned after a rollback")
    _waiting(p, follow=False)
    p.set_defaults(func=commands.cmd_promote)

    p = sub.add_parser("rollback", help="ask for a stage to go back to a digest it held before")
    p.add_argument("definition")
    p.add_argument("--stage", required=True)
    p.add_argument("--digest", required=True)
    p.add_argument("--reason", required=True)
    _waiting(p, follow=False)
    p.set_defaults(func=commands.cmd_rollback)

    for verb, func, text in (("approve", commands.cmd_approve, "approve a promotion request as the token's user"),
                             ("reject", commands.cmd_reject, "reject a promotion request (with --comment)")):
        p = sub.add_parser(verb, help=text)
        p.add_argument("id", type=int, help="the promotion request's id")
        p.add_argument("--comment", default="")
        p.add_argument("--digest", help="refuse unless the request is for this digest")
        if verb == "approve":
            p.add_argument("--confirm", metavar="STAGE", help="the stage's name, to approve a request that moves it back")
            _waiting(p, follow=False)
        p.set_defaults(func=func)

    p = sub.add_parser("promotions", help="list or show promotion requests")
    psub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    q = psub.add_parser("list")
    q.add_argument("--status", help="pending, approved, applying, applied, failed, rejected, ...")
    q.add_argument("--stage")
    q.add_argument("--definition")
    _listing(q)
    q.set_defaults(func=commands.cmd_promotions_list)
    q = psub.add_parser("show")
    q.add_argument("id", type=int)
    q.set_defaults(func=commands.cmd_promotions_show)

    p = sub.add_parser("disk-image", help="disk images: create, show, list")
    dsub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    q = dsub.add_parser("create", help="convert a build's image into disk images")
    q.add_argument("--build", type=int, help="the build's id")
    q.add_argument("--stage", help="or what a stage holds (with --definition)")
    q.add_argument("--definition")
    q.add_argument("--type", action="append", required=True, help="qcow2, raw, iso, anaconda-iso, vmdk, ami (repeatable)")
    q.add_argument("--config", help="a saved configuration (name or id)")
    q.add_argument("--rootfs", help="xfs, ext4 or btrfs")
    _waiting(q)
    q.set_defaults(func=commands.cmd_disk_image_create)
    q = dsub.add_parser("show")
    q.add_argument("id", type=int)
    q.set_defaults(func=commands.cmd_disk_image_show)
    q = dsub.add_parser("list")
    q.add_argument("--definition")
    _listing(q)
    q.set_defaults(func=commands.cmd_disk_image_list)

    p = sub.add_parser("host", help="hosts: status, timeline, upgrade, rollback, switch, reboot")
    hsub = p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")
    q = hsub.add_parser("list")
    q.add_argument("--stage")
    q.add_argument("--state")
    _listing(q)
    q.set_defaults(func=commands.cmd_host_list)
    q = hsub.add_parser("status", help="booted, staged and rollback digests (--wait-for DIGEST to wait for one)")
    q.add_argument("host", help="TEAM/NAME, NAME or id")
    q.add_argument("--team")
    q.add_argument("--wait-for", metavar="DIGEST", help="wait until the host boots this digest")
    q.add_argument("--staged", action="store_true", help="with --wait-for: until it has it staged")
    q.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
    q.add_argument("--interval", type=float, default=2.0, metavar="SECONDS")
    q.set_defaults(func=commands.cmd_host_status)
    q = hsub.add_parser("timeline")
    q.add_argument("host")
    _listing(q)
    q.set_defaults(func=commands.cmd_host_timeline)
    for name, func, text in (("upgrade", commands.cmd_host_upgrade, "stage the update (--apply: and reboot; --check: only look)"),
                             ("rollback", commands.cmd_host_rollback, "roll back at next boot (--apply: and reboot)"),
                             ("switch", commands.cmd_host_switch, "switch to another image (--apply: and reboot)"),
                             ("reboot", commands.cmd_host_reboot, "reboot")):
        q = hsub.add_parser(name, help=text)
        q.add_argument("host")
        q.add_argument("--team")
        if name == "switch":
            q.add_argument("image", help="the image reference to switch to")
        if name in ("upgrade", "rollback", "switch"):
            q.add_argument("--apply", action="store_true", help="and reboot into it")
        if name == "upgrade":
            q.add_argument("--check", action="store_true", help="only check for an update")
        _waiting(q)
        q.set_defaults(func=func)

    p = sub.add_parser("watch", help="print the portal's events as they happen")
    p.add_argument("--type", action="append", help="only these types, e.g. build.failed (repeatable)")
    p.add_argument("--team")
    p.add_argument("--after", help="start after this event id (default: from now on)")
    p.add_argument("--recent", action="store_true", help="start with the latest events instead of from now on")
    p.add_argument("--count", type=int, help="stop after this many events")
    p.add_argument("--timeout", type=float, default=None, metavar="SECONDS", help="stop after this long")
    p.add_argument("--interval", type=float, default=2.0, metavar="SECONDS")
    p.set_defaults(func=commands.cmd_watch)
    return parser


def main(argv=None, *, stdout=None, stderr=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    out = Output(args.json, stdout, stderr)
    if getattr(args, "follow", False):
        args.wait = True
    try:
        if not getattr(args, "needs_client", True):
            return args.func(args, out)
        settings = config.load(url=args.url)
        if not settings.token:
            out.error("no token: set IMP_TOKEN or run `imp login`")
            return exits.ACCESS
        return args.func(Client(settings.url, settings.token), args, out)
    except config.ConfigError as exc:
        out.error(str(exc))
        return exits.USAGE
    except ApiError as exc:
        out.error(exc.message())
        return exc.exit_code
    except KeyboardInterrupt:
        out.error("interrupted")
        return 130
