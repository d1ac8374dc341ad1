"""The `tap-jobresults` command.

Start-up only builds objects that live as long as the process (the SDK and its imports, the config,
schemas, streams): the garbage collector, which would scan them again and again while they are
built (about 130 collections, 10-15% of the start-up), is off until the tap is set up. Then they are
frozen out of its sight (`gc.freeze`), so a sync's collections scan only the sync's own objects.
"""

from __future__ import annotations

import gc


def main() -> None:
    gc.disable()  # back on once the tap is set up (TapJobResults.__init__), or with the process's end
    from tap_jobresults.tap import TapJobResults

    TapJobResults.cli()


def collect_from_here() -> None:
    """What exists now lives as long as the process: the collector skips it from here on."""
    gc.freeze()
    gc.enable()
