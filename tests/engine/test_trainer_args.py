"""The recipe's ``train`` section -> ``pl.Trainer`` arguments (no hand-kept map), and the process
settings every training command applies once."""

from __future__ import annotations

import inspect

import lightning.pytorch as pl
import torch

from detlab.defaults import DETLAB_TRAIN_KEYS, TRAIN_DEFAULTS
from detlab.engine.trainer import TRAINER_KEYS, build_trainer, train_settings, trainer_arguments
from detlab.recipe import Recipe, with_defaults

# What the hand-written map of 1b54f77 passed for the default train section.
OLD_DEFAULT_ARGS = dict(
    max_epochs=10, accelerator="auto", devices="auto", num_nodes=1, strategy="auto",
    precision="32-true", accumulate_grad_batches=1, gradient_clip_algorithm="norm",
    log_every_n_steps=10, check_val_every_n_epoch=1, num_sanity_val_steps=0,
    deterministic=False,
    sync_batchnorm=False,  # a train key since issue 17 (Lightning's default)
)


def test_every_train_key_is_read_by_detlab_or_is_a_trainer_argument():
    params = set(inspect.signature(pl.Trainer.__init__).parameters)
    assert set(TRAINER_KEYS) <= params
    assert not DETLAB_TRAIN_KEYS & params  # a detlab key never shadows a Trainer argument
    assert DETLAB_TRAIN_KEYS <= set(TRAIN_DEFAULTS)
    assert set(TRAINER_KEYS) | DETLAB_TRAIN_KEYS == set(TRAIN_DEFAULTS)


def test_default_section_gives_the_arguments_of_the_old_map():
    # gradient_clip_val and the limits are None by default: Lightning's default, not passed
    assert trainer_arguments(dict(TRAIN_DEFAULTS)) == OLD_DEFAULT_ARGS


def test_recipe_values_reach_the_trainer(tmp_path):
    train = dict(max_epochs=3, gradient_clip_val=0.5, accumulate_grad_batches=2,
                 limit_train_batches=4, limit_val_batches=0.25, check_val_every_n_epoch=2,
                 log_every_n_steps=7, progress_bar=False, accelerator="cpu")
    recipe = Recipe(with_defaults({"train": train}), name="r")
    trainer = build_trainer(recipe, tmp_path / "r" / "version_0")
    assert trainer.max_epochs == 3
    assert trainer.gradient_clip_val == 0.5
    assert trainer.accumulate_grad_batches == 2
    assert trainer.limit_train_batches == 4 and trainer.limit_val_batches == 0.25
    assert trainer.check_val_every_n_epoch == 2 and trainer.log_every_n_steps == 7


def test_train_settings_applies_the_thread_count_once():
    before = torch.get_num_threads()
    try:
        cfg = train_settings(Recipe(with_defaults({"train": {"num_threads": 1}})))
        assert torch.get_num_threads() == 1 and cfg["max_epochs"] == TRAIN_DEFAULTS["max_epochs"]
    finally:
        torch.set_num_threads(before)
