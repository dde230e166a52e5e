"""Training engine: the LightningModule, the Trainer built from a recipe, callbacks, optimizers
and writing predictions."""
