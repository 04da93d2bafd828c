# The two commands of the README: `make reproduce` (PROFILE=smoke|quick|paper) and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PROFILE ?= quick
export SNCN_DATA ?= $(CURDIR)/data
STAMP := $(VENV)/.sncn-installed

.PHONY: reproduce test lab lint bench env report-check dist docs compat gpu-check

env: $(STAMP)

# the exact environment of results/: every package pinned by requirements/lock.txt
$(STAMP): pyproject.toml requirements/lock.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements/lock.txt -e '.[notebooks,dev]'
	touch $@

reproduce: $(STAMP)
	$(PY) -m sncn.pipeline --profile $(PROFILE)

# renders results/$(PROFILE)/report.html in headless Chromium to report.png (apt-get install chromium)
report-check: $(STAMP)
	$(PY) -m sncn.report --profile $(PROFILE) --screenshot

test: $(STAMP)
	TQDM_DISABLE=1 $(PY) -m pytest --nbval-lax tests notebooks

# jupyter refuses to start as root unless given --allow-root (containers often run as root)
LAB_FLAGS = $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (sncn)"
	$(VENV)/bin/jupyter lab $(LAB_FLAGS) notebooks

lint: $(STAMP)
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m benchmarks.layers
	$(PY) -m benchmarks.train_step --compile
	$(PY) -m benchmarks.corruptions

# on one CUDA GPU, in at most 10 minutes: the CUDA tests, layer and step timings, and paper-scale
# WRN-40-2 Table 1 cells (results/benchmarks/gpu.md, results/paper/tables/table1_gpu_check.md).
# Installs nothing: the venv's python where `make env` made one, else the machine's own python3
# and its torch (a GPU image without a package registry), reading sncn from this tree.
GPU_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_ARGS ?=
gpu-check:
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_PY) -m benchmarks.gpu_paper $(GPU_ARGS)

# The wheel and sdist (dist/), checked by twine, then the wheel alone (its core dependencies
# only) in a fresh venv, where the library imports and the layer tests pass. Takes minutes: pip
# installs torch into that venv. PYTHON picks the interpreter, e.g. PYTHON=python3.13, and
# DIST_PINS extra requirements, e.g. DIST_PINS="torch==2.13.* torchvision==0.28.*".
DIST_VENV ?= /tmp/sncn-dist-venv
DIST_PINS ?=
dist: $(STAMP)
	rm -rf dist $(DIST_VENV)
	$(PY) -m build --outdir dist .
	$(PY) -m twine check dist/*
	$(PYTHON) -m venv $(DIST_VENV)
	$(DIST_VENV)/bin/python -m pip install --quiet dist/*.whl pytest hypothesis $(DIST_PINS)
	cd dist && $(DIST_VENV)/bin/python -c "import sncn.layers, sncn.models, sncn.corruptions, \
	torch; print('sncn', sncn.__version__, 'with torch', torch.__version__, 'imports')"
	cd dist && $(DIST_VENV)/bin/python -m pytest -q -p no:cacheprovider --rootdir=../tests \
	../tests/test_layers.py ../tests/test_layers_properties.py

# the API reference (from the docstrings), a page per notebook and the fidelity page, in site/;
# any warning fails the build
docs: $(STAMP)
	$(PY) -m mkdocs build --strict

# the supported range's two ends: the oldest torch on the oldest Python, the newest torch pip
# finds on Python 3.13 (each a fresh venv of several GB, deleted afterwards; not in CI)
compat: $(STAMP)
	$(MAKE) dist PYTHON=python3.10 DIST_VENV=/tmp/sncn-compat-oldest \
	    DIST_PINS="torch==2.13.* torchvision==0.28.* numpy==1.26.*"
	rm -rf /tmp/sncn-compat-oldest
	$(MAKE) dist PYTHON=python3.13 DIST_VENV=/tmp/sncn-compat-newest DIST_PINS=
	rm -rf /tmp/sncn-compat-newest
