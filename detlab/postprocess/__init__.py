"""Post-processors: turn raw head outputs into :class:`~detlab.structures.Prediction` objects."""
