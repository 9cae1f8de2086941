"""Scoring what was trained: clean, corruption and calibration error, the corruptions
themselves, and the metrics."""
