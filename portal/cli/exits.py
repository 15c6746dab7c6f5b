"""The CLI's exit codes: scripts branch on these, so they never change meaning (docs/cli.md lists them)."""

OK = 0
FAILED = 1  # the build, promotion, disk image or host action ended failed, rejected or cancelled
USAGE = 2  # bad arguments (argparse's own code), or no URL configured
ACCESS = 3  # no token, a bad, revoked or expired one, a missing scope or a role that may not do it (401, 403)
NOT_FOUND = 4  # no such object, or one of another team (404)
REFUSED = 5  # the portal refused the request as it stands: bad input, or not in a state that allows it (400, 409, 422)
UNAVAILABLE = 6  # the portal could not be reached or failed (connection error, 5xx, 429 after retries)
TIMEOUT = 7  # --timeout passed while waiting

DESCRIPTIONS = {
    OK: "success",
    FAILED: "the run ended failed, rejected or cancelled",
    USAGE: "usage error",
    ACCESS: "authentication or access refused (401/403)",
    NOT_FOUND: "not found (404)",
    REFUSED: "refused: bad input or wrong state (400/409/422)",
    UNAVAILABLE: "portal unreachable or failing (network, 5xx, 429)",
    TIMEOUT: "timed out waiting",
}


def for_status(status: int) -> int:
    if status in (401, 403):
        return ACCESS
    if status == 404:
        return NOT_FOUND
    if 400 <= status < 500 and status != 429:
        return REFUSED
    return UNAVAILABLE
