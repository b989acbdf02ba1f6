"""Evaluation: streaming metrics, codebook statistics, reports and plots."""
