"""Negative-sentiment spike detection, alert lifecycle and delivery."""
