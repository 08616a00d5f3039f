"""Tests of the experiment runner and report tools."""
