# The two commands of the README:  make test  and  make book.
# Each creates the virtual environment when it is missing and installs what it needs.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The torch pair tested here; pyproject.toml keeps wide ranges for Colab.
TORCH_PIN := torch==2.14.1 torchvision==0.29.1
# Real image sets (Magnetic Tile, MVTec AD transistor) beside the checkout, when present.
DATA_ROOT ?= $(abspath $(wildcard ../shared/data))

.PHONY: venv test lint pytest book clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH_PIN)
	$(PY) -m pip install --quiet -e ".[test,book]"
	touch $(STAMP)

test: lint pytest

lint: $(STAMP)
	$(PY) -m ruff check glancing tests

# One torch thread: on 2 shared cores, more threads are slower and unsteady.
pytest: $(STAMP)
	OMP_NUM_THREADS=1 GLANCING_DATA_ROOT="$(DATA_ROOT)" $(PY) -m pytest

book: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/jupyter-book build . -W -n --keep-going

clean:
	rm -rf _build
