"""Data: datasets, albumentations transforms, samplers, collate and the Lightning data module."""
