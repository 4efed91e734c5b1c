"""runsense's benchmarks (SPEC §8): `python benchmarks/run.py` runs them all and prints one table."""
