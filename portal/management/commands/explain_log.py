import json as jsonlib
import sys
from dataclasses import asdict

from django.core.management.base import BaseCommand, CommandError

from portal import failures

TOOLS = ("podman", "buildah", "bootc-image-builder", "image-builder", "bootc", "bootc-lint", "anaconda")


class Command(BaseCommand):
    help = ("Explain a build, conversion or bootc log the way the portal's pages do: the failing step, the headline, the "
            "cause and the fix. Reads the file named, or standard input with '-'.")

    def add_arguments(self, parser):
        parser.add_argument("path", help="the log file, or - for standard input")
        parser.add_argument("--tool", choices=TOOLS, default="", help="only the rules for this tool's logs")
        exit_group = parser.add_mutually_exclusive_group()
        exit_group.add_argument("--succeeded", action="store_true", help="the run exited 0 (only warnings can apply)")
        exit_group.add_argument("--failed", action="store_true", help="the run failed")
        parser.add_argument("--json", action="store_true", help="print the explanation as JSON")

    def handle(self, *args, path, tool, succeeded, failed, json: bool, **options):
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8", errors="replace").read()
        except OSError as exc:
            raise CommandError(f"Cannot read {path}: {exc.strerror}.") from None
        explanation = failures.explain(text, tool=tool, succeeded=True if succeeded else False if failed else None)
        if json:
            self.stdout.write(_json(explanation))
            return
        outcome = {failures.FAILED: "Failed", failures.WARNINGS: "Succeeded with warnings",
                   failures.SUCCEEDED: "Succeeded"}[explanation.outcome]
        where = (" at " if explanation.failed else ", last step ") + explanation.step if explanation.step else ""
        self.stdout.write(f"{outcome}{where}.")
        if explanation.headline:
            self.stdout.write(f"Headline: {explanation.headline}")
        if explanation.known:
            self.stdout.write(f"Cause ({explanation.cause}): {explanation.explanation}")
            self.stdout.write(f"Fix: {explanation.fix}")
            if explanation.link:
                self.stdout.write(f"See: {explanation.link}")
        elif explanation.failed:
            self.stdout.write("Cause: not one the portal knows; the headline is the last error line of the failing "
                              "step.")
        for warning in explanation.warnings:
            self.stdout.write(self.style.WARNING(f"Warning: {warning}"))


def _json(explanation):
    return jsonlib.dumps(asdict(explanation), indent=2)
