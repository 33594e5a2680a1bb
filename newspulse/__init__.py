"""NewsPulse: financial-news sentiment monitoring."""

__version__ = "0.1.0"
