"""Marker file."""
