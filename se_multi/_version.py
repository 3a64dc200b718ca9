"""se_multi's version, in one place (a leaf: every floor may import it without importing the package)."""

__version__ = "0.1.0"
