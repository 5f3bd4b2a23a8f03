"""Benchmarks (`make bench`): figures for the closing notes, never pass/fail tests of speed."""
