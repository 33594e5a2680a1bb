"""BENCHMARKS.md's sections, one module per results file: its targets' verdicts, its plots and
its title. ``bench/report.py`` assembles them in the page's order; ``base`` holds what they share
(reading a results file, a verdict row, a saved plot)."""
