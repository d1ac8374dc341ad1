from tap_jobresults.cli import main

main()
