"""Experiment tools: sweeps (`experiments.ablate`), reports (`experiments.report`), benchmarks."""
