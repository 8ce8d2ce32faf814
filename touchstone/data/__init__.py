"""Data sets: CSV manifests of region photos, their validation, splits, import and synthesis."""
