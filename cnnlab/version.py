"""The package version, at the ground layer so that runs.py and the CLI need not import the package root."""

__version__ = "0.1.0"
