"""Warta: post once, reach every citizen."""

__version__ = "0.1.0"
