"""Flax Linen networks: Re-ID backbone and head, generators, discriminators, adversaries."""
