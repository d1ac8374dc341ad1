"""The `tap-jobresults` command.

Start-up only builds objects that live as long as the process (the SDK and its imports, the config,
schemas, streams): the garbage collector, which would scan them again and again while they are
built (about 130 collections, 10-15% of the start-up's CPU), is off until the tap is set up. Then
they are frozen out of its sight (`gc.freeze`), so a sync's collections scan only the sync's own
objects. Only the command does this: a tap built in-process by other code (tests, an orchestrator)
leaves the collector alone.
"""

from __future__ import annotations

import gc

_starting = False


def main() -> None:
    global _starting
    _starting = True
    gc.disable()  # back on once the tap is set up (TapJobResults.__init__), or with the process's end
    from tap_jobresults.tap import TapJobResults

    TapJobResults.cli()


def collect_from_here() -> None:
    """Set up: what exists now lives as long as the process, and the collector skips it from here on."""
    global _starting
    if _starting:
        _starting = False
        gc.freeze()
        gc.enable()
