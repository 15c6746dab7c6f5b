"""`manage.py builder_worker NAME`: the Celery worker that serves one builder, with the builder's capacity as its
concurrency (docs/workers.md).

A remote (SSH) builder gets exactly one such worker, anywhere that reaches it; a second would double its capacity, so
the command refuses while one is alive. A local builder's worker runs on a machine of the builder's architecture, with
podman; start one per machine.
"""

import os
import shlex
import sys

from django.core.management.base import BaseCommand, CommandError

from builds import queues
from builds.models import Builder, BuilderKind
from portal import workers


class Command(BaseCommand):
    help = "Run the Celery worker that serves one builder's queues, with the builder's capacity as its concurrency."

    def add_arguments(self, parser):
        parser.add_argument("name", help="The builder's name, as on the builders page.")
        parser.add_argument("--print", action="store_true", dest="print_only",
                            help="Print the worker's command line instead of running it.")

    def handle(self, *args, name, print_only, **options):
        builder = Builder.objects.filter(name=name).first()
        if builder is None:
            names = ", ".join(Builder.objects.values_list("name", flat=True)) or "none yet"
            raise CommandError(f"No builder named {name!r} (builders: {names}).")
        if not builder.enabled:
            raise CommandError(f"Builder {name} is disabled: enable it on the builders page first.")
        if builder.kind == BuilderKind.LOCAL and builder.architecture != queues.local_architecture():
            raise CommandError(f"Builder {name} builds {builder.architecture} with this machine's podman, but this "
                               f"machine is {queues.local_architecture()}: start its worker on a {builder.architecture} "
                               "machine.")
        served_by = queues.worker_queues(builder)
        if builder.kind == BuilderKind.SSH:
            try:
                others = [w.name for w in workers.consumers(served_by[0])]
            except Exception as exc:  # noqa: BLE001 - the worker could not reach its broker either
                raise CommandError(f"Redis does not answer ({exc}); check REDIS_URL.") from None
            if others and not print_only:
                raise CommandError(f"{', '.join(others)} already serves builder {name}; a second worker would double "
                                   f"its capacity ({builder.capacity}). Change the capacity on the builders page instead.")
        argv = [sys.executable, "-m", "celery", "-A", "portal", "worker", "-Q", ",".join(served_by),
                "--concurrency", str(builder.capacity), "-n", f"builder-{builder.pk}@%h", "-l", "INFO"]
        self.stdout.write(f"Builder {name} ({builder.kind}, {builder.architecture}): queues {', '.join(served_by)}, "
                          f"{builder.capacity} at once\n{shlex.join(argv)}")
        if print_only:
            return
        sys.stdout.flush()
        os.execv(sys.executable, argv)
