"""Datasets. Each returns the sample dict of :mod:`detlab.data.collate` and registers itself in
``DATASETS``."""
