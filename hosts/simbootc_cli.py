"""`bootc` and `systemctl reboot` of one simulated host, as commands on PATH, for the tests that run the real agent
script (`hosts/agent/portal-agent.sh`): the same state machine as the simulated fleet's (`hosts.simbootc`), its state
kept in a JSON file (`SIMBOOTC_STATE`) between commands.

    SIMBOOTC_STATE=/tmp/edge-01.json python -m hosts.simbootc_cli bootc status --format=json
    SIMBOOTC_STATE=/tmp/edge-01.json python -m hosts.simbootc_cli systemctl reboot

A reboot happens at once (the process that asked for it ends anyway): the next command sees the next boot.
"""

import asyncio
import os
import sys
from pathlib import Path

from .simbootc import FAULTS, BootcMachine, CommandError, HostState


class _StateFile:
    reboot_seconds = 0

    def __init__(self, path):
        self.path = Path(path)

    def save(self, machine):
        scratch = self.path.with_suffix(".tmp")
        scratch.write_text(machine.state.to_json())
        scratch.replace(self.path)


class CommandLineMachine(BootcMachine):
    def __init__(self, path):
        self.fleet = _StateFile(path)
        self.state = HostState.from_json(Path(path).read_text())
        self.name = self.state.name
        self.faults = dict(FAULTS)

    def schedule_reboot(self, *, soft=False):
        self._boot_next(soft=soft)
        self.state.last_reboot_soft = soft
        self.changed()


def main(argv):
    machine = CommandLineMachine(os.environ["SIMBOOTC_STATE"])
    if argv[:1] == ["systemctl"] and argv[1:] != ["reboot"]:
        return 0  # enable, daemon-reload, ...: nothing to simulate
    try:
        output = asyncio.run(machine.execute(argv))
    except CommandError as exc:
        print(exc, file=sys.stderr)
        return exc.status
    sys.stdout.write(output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
