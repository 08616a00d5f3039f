"""Datasets (records), the synthetic pedestrian generator and the grain input pipeline."""
