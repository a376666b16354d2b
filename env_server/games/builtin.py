"""Imports every built-in game so that each registers itself."""
