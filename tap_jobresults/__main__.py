from tap_jobresults.tap import TapJobResults

TapJobResults.cli()
