"""Training: data loading, the model, the loop, evaluation and export.

Built on `touchstone` (manifests, decoding, preprocessing) and on torch; serving never imports
this package.
"""
