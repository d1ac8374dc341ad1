"""tap-jobresults: a Singer tap for the results of asynchronous ML/AI jobs."""
