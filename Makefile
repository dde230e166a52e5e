# One place for the commands the README and CI use.
PYTHON ?= python
# torch/torchvision pinned to the builds the project is tested with.
TORCH_PIN = torch==2.14.1 torchvision==0.29.1

.PHONY: install install-all test docs docs-serve train-demo

install:
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q $(TORCH_PIN)
	$(PYTHON) -m pip install -q -e .

install-all:
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q $(TORCH_PIN)
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
