"""rotator: keeps Polymarket CLOB API credentials fresh."""

__version__ = "0.1.0"
