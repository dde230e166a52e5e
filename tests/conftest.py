"""Shared test settings: one thread per process (the suite runs with -n 2 on 2 cores)."""

import os

import torch

os.environ.setdefault("PYTHONHASHSEED", "0")
torch.set_num_threads(1)
