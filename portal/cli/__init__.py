"""imp: the image mode portal from the command line, for CI pipelines and operators.

    imp login                                   store the portal's URL and a token in ~/.config/imp/config.toml
    imp build web-os --wait --follow            build the definition's current revision, stream the log
    imp promote web-os --build 7 --to prod      ask for a build's digest to go to a stage
    imp approve 12                              approve request #12 as the token's user
    imp disk-image create --build 7 --type qcow2 --wait
    imp host status web-03 | upgrade web-03 | rollback web-03
    imp runs follow 311                         follow any run's log
    imp watch --type build.failed               print the portal's events as they happen

Reads IMP_URL and IMP_TOKEN, or the config file `imp login` writes. `--json` prints JSON for scripts; the exit codes
are in `imp --help` and docs/cli.md.
"""

import sys

from .main import main

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover - `python -m portal.cli` runs __main__.py
    sys.exit(main())
