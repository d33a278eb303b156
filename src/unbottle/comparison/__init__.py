"""Comparisons of two models or two stored runs: interleaved A/B speed, paired accuracy, goals."""
