"""se_multi's version, in one place (a leaf: every floor may import it without importing the package)."""

__version__ = "0.2.0"
