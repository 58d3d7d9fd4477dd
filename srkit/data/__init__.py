"""Datasets: paired folders, on-the-fly degradation, and the bundled srkit-mini benchmark set."""
