"""A small runsense project: the seed's status reporting flow, plus a job that fails on purpose."""
