"""Touchstone: image-based authentication and appraisal of second-hand luxury goods."""
