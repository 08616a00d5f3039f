"""Sweep files for `python -m experiments.ablate`: each defines `get_sweep(arg=None)`."""
