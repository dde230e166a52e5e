# One place for the commands the README and CI use.
PYTHON ?= python
# torch/torchvision pinned to the builds the project is tested with.
TORCH_PIN = torch==2.14.1 torchvision==0.29.1
# CPU=1 (`make install CPU=1`, `make install-all CPU=1`): torch's CPU-only wheels from the
# PyTorch index, without the 16 nvidia-* CUDA wheels and triton; see README "Install" for the
# sizes. The +cpu local version is pinned so that pip fails instead of quietly taking the CUDA
# build of the same version from another index it is configured with. Default: CUDA, PyPI.
CPU ?= 0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_CPU_PIN = torch==2.14.1+cpu torchvision==0.29.1+cpu
ifeq ($(CPU),1)
TORCH_INSTALL = $(PYTHON) -m pip install -q --index-url $(TORCH_CPU_INDEX) $(TORCH_CPU_PIN)
else
TORCH_INSTALL = $(PYTHON) -m pip install -q $(TORCH_PIN)
endif

.PHONY: install install-all test docs docs-serve train-demo

install:
	$(PYTHON) -m pip install -q --upgrade pip
	$(TORCH_INSTALL)
	$(PYTHON) -m pip install -q -e .

install-all:
	$(PYTHON) -m pip install -q --upgrade pip
	$(TORCH_INSTALL)
	$(PYTHON) -m pip install -q -e ".[all]"

# Installs everything, then runs the whole suite on 2 processes.
test: install-all
	$(PYTHON) -m pytest -n 2 -q tests

train-demo: install
	detlab train recipes/fracture_unet.py

# The site, into site/, with warnings as errors: a broken link or cross-reference, a docstring
# griffe cannot parse, or (docs/hooks.py) a public symbol without a docstring fails the build.
# Needs the docs extra (make install-all).
docs:
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict

docs-serve:
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs serve
