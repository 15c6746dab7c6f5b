#!/usr/bin/env python
"""Stream a realistic build log into a new run, slowly, to watch the viewer: a podman build, then a disk-image conversion.

    PORTAL_VAR_DIR=... DATABASE_URL=... REDIS_URL=... .venv/bin/python bench/logs/demo.py --team platform --delay 0.1

Prints the run's URL path first. Uses the demo data's team and user (manage.py seed_demo).
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")


def main():
    import django

    django.setup()
    from bench.logs.samples import bib_verbose, podman_build
    from portal import live, services
    from portal.logsink import LogSink
    from portal.models import RunKind, RunStatus, Team, User

    parser = argparse.ArgumentParser()
    parser.add_argument("--team", default="platform")
    parser.add_argument("--user", default="developer")
    parser.add_argument("--delay", type=float, default=0.1, help="seconds between lines")
    parser.add_argument("--fail", action="store_true", help="end the run failed")
    parser.add_argument("--stop-after", type=int, default=0, help="leave the run running after this many lines")
    args = parser.parse_args()
    team = Team.objects.get(slug=args.team)
    user = User.objects.get(username=args.user)
    run = services.run_create(kind=RunKind.BUILD, title="Build 7 of web-os (demo)", team=team, started_by=user)
    print(run.get_absolute_url(), flush=True)
    services.run_start(run, phase="building")
    with LogSink(run) as sink:
        for i, line in enumerate([*podman_build(), "::group::Converting to qcow2", *bib_verbose(), "::endgroup::"], 1):
            sink.write(line)
            sink.poll()
            if args.stop_after and i >= args.stop_after:
                sink.flush()
                live.wait_published()
                return
            time.sleep(args.delay)
    services.run_finish(run, status=RunStatus.FAILED if args.fail else RunStatus.SUCCEEDED,
                        reason="bootc container lint found 1 warning." if not args.fail else "Step 6/6 failed.",
                        log_lines=sink.last_seq)
    live.wait_published()


if __name__ == "__main__":
    main()
