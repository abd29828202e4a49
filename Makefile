# One command per stage. Each target first makes .venv from requirements.txt when it is missing or
# older than requirements.txt, so `make cnn` and `make test` work on a fresh clone.
# Python 3.9 to 3.13: `make install PYTHON=python3.10` picks the Python that makes .venv.
# No make (Windows)? README.md, "Windows (no make)", has the plain python command of each target.
#
# Options pass through as variables:  make cnn DATA_DIR=path/to/mnist EPOCHS=2
#   DATA_DIR  folder with MNIST idx files / mnist.json.gz (default: ./work, then PaddlePaddle's cache)
#   EPOCHS, SEED, DEVICE (auto|cpu|gpu), ARGS (any other flags, e.g. ARGS="--opt sgd --lr 0.01")
#   CKPT      checkpoint for `make resume` (default checkpoint/mnist_epoch0)
#   NPROC=2   for `make cnn` / `make resume`: data-parallel workers via paddle.distributed.launch (stage 七)
#   HOUSING_DATA  folder holding housing.data, or the file (default: ./work, then PaddlePaddle's cache)
#   FAST=1    for `make all`: a fraction of the data, 2 epochs

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

DATA_DIR ?=
EPOCHS   ?=
SEED     ?=
DEVICE   ?=
ARGS     ?=
CKPT     ?= checkpoint/mnist_epoch0
NPROC    ?=
HOUSING_DATA ?=

# (strip: the commands make prints have single spaces where a variable is empty)
RUN_FLAGS = $(strip $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(DEVICE),--device $(DEVICE)) $(ARGS))
HOUSING_FLAGS = $(strip $(if $(HOUSING_DATA),--data-dir $(HOUSING_DATA)) $(if $(EPOCHS),--epochs $(EPOCHS)))
TRAIN_FLAGS = $(strip $(RUN_FLAGS) $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(SEED),--seed $(SEED)))
RESUME_FLAGS = $(strip --ckpt $(CKPT) $(RUN_FLAGS) $(if $(EPOCHS),--epochs $(EPOCHS)) \
	$(if $(wildcard runs/cnn/metrics.json),--compare runs/cnn/metrics.json))
RESULTS_FLAGS = $(strip $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(HOUSING_DATA),--housing-data $(HOUSING_DATA)) \
	$(if $(DEVICE),--device $(DEVICE)) $(if $(FAST),--fast))
# with NPROC: PaddlePaddle's own launcher starts NPROC workers; their logs go to log/workerlog.N
LAUNCH = $(PY)$(if $(NPROC), -m paddle.distributed.launch --nproc_per_node $(NPROC) --log_dir log)

.DEFAULT_GOAL := help
# one target at a time, also under make -j: two of them would make or install into .venv at once
.NOTPARALLEL:
.PHONY: help install all cnn resume tutorial-resume data-json housing linear mlp notebooks bench bench-env lint test test-whole golden compat clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'
	@echo "  variables: DATA_DIR HOUSING_DATA EPOCHS SEED DEVICE ARGS CKPT NPROC (e.g. make cnn DATA_DIR=path/to/mnist NPROC=2)"

# PYTHON=... picks the Python that makes .venv; with .venv there already it changes nothing, and
# one note says so when the Makefile is read (a recipe on `install` would make it never up to date
# for `make -q`). bench-env uses PYTHON for .venv-torch: no note there.
ifeq ($(origin PYTHON),command line)
ifneq ($(wildcard $(PY)),)
ifneq ($(filter-out bench-env,$(MAKECMDGOALS)),)
VENV_VERSION := $(or $(shell $(PY) -c 'import platform; print(platform.python_version())' 2>/dev/null),unknown)
ASKED := $(shell $(PYTHON) -c 'import platform, sys; print(platform.python_version(), \
	"supported" if (3, 9) <= sys.version_info[:2] <= (3, 13) else "unsupported")' 2>/dev/null)
ifneq ($(VENV_VERSION),$(word 1,$(ASKED)))
ifeq ($(word 2,$(ASKED)),supported)
$(info note: .venv exists with Python $(VENV_VERSION), so PYTHON=$(PYTHON) (Python $(word 1,$(ASKED))) changes nothing; to switch: rm -rf .venv, then make install PYTHON=$(PYTHON))
else
$(info note: .venv exists with Python $(VENV_VERSION) and is used as it is; PYTHON=$(PYTHON) is $(if $(ASKED),Python $(word 1,$(ASKED)),no Python found here), not a Python 3.9 to 3.13 to switch to)
endif
endif
endif
endif
endif

# .venv made with a supported Python; there already (requirements.txt newer): updated with its own
# Python, never remade over it
define MAKE_VENV
	@test -x $(PY) || $(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 9) <= v <= (3, 13) else \
		f"error: $(PYTHON) is Python {v[0]}.{v[1]}; these scripts support Python 3.9 to 3.13 (PaddlePaddle 3.3.1 has no wheels for others): make install PYTHON=python3.12, say")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
endef

# a learner's install: pip, with the index or mirror pip is set to use
$(STAMP): requirements.txt
	$(MAKE_VENV)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $(STAMP)

# make test's: both files in one call of uv (pinned, from PyPI, or UV_DEFAULT_INDEX: uv does not
# read pip's configuration), about a minute faster than pip from a fresh clone (measured: 20 s
# against 90 s on 2 cores); the same pinned versions either way, and pip where uv cannot install
$(TEST_STAMP): requirements.txt requirements-test.txt
	$(MAKE_VENV)
	($(PY) -m pip install --disable-pip-version-check -q uv==0.13.9 && \
		$(PY) -m uv pip install -q --python $(PY) --compile-bytecode -r requirements.txt -r requirements-test.txt) \
		|| { echo "note: uv could not install them; pip installs them instead"; \
		$(PY) -m pip install --disable-pip-version-check -q -r requirements.txt -r requirements-test.txt; }
	touch $(STAMP) $(TEST_STAMP)

install: $(STAMP)  ## create or update .venv from requirements.txt

all: $(STAMP)  ## every stage with the tutorial's settings -> results/RESULTS.md + figures (FAST=1: minutes)
	$(PY) tools/results.py $(RESULTS_FLAGS)

cnn: $(STAMP)  ## train the CNN (stages 四-九): checkpoints in checkpoint/, metrics and plots in runs/cnn
	$(LAUNCH) mnist_cnn.py $(TRAIN_FLAGS)

resume: $(STAMP)  ## continue from CKPT and compare with runs/cnn/metrics.json when it exists
	$(LAUNCH) resume.py $(RESUME_FLAGS)

tutorial-resume: $(STAMP)  ## stage 九: the tutorial's train_again() with two faults added (rate restarted, reshuffled): the losses drift
	$(PY) tutorial_resume.py --ckpt $(CKPT) --compare runs/cnn/metrics.json

data-json: $(STAMP)  ## write the course's work/mnist.json.gz from the four MNIST idx files (DATA_DIR)
	$(PY) tools/mnist_json.py $(if $(DATA_DIR),--data-dir $(DATA_DIR))

linear: $(STAMP)  ## stage 二: Linear(784->1) with MSE, then as a softmax classifier (runs/linear*)
	$(PY) mnist_linear.py --out runs/linear --ckpt-dir checkpoint/linear $(TRAIN_FLAGS)
	$(PY) mnist_linear.py --loss ce --out runs/linear-ce --ckpt-dir checkpoint/linear-ce $(TRAIN_FLAGS)

mlp: $(STAMP)  ## stage 四: MLP 784-10-10-1 (MSE), with cross-entropy, and in numpy (runs/mlp*, runs/numpy)
	$(PY) mnist_mlp.py --out runs/mlp --ckpt-dir checkpoint/mlp $(TRAIN_FLAGS)
	$(PY) mnist_mlp.py --loss ce --out runs/mlp-ce --ckpt-dir checkpoint/mlp-ce $(TRAIN_FLAGS)
	$(PY) mnist_numpy.py --out runs/numpy $(strip $(if $(DATA_DIR),--data-dir $(DATA_DIR)) $(if $(EPOCHS),--epochs $(EPOCHS)) $(if $(SEED),--seed $(SEED)))

housing: $(STAMP)  ## Boston housing, numpy by hand then PaddlePaddle (runs/housing*)
	$(PY) housing.py --impl numpy --method gd --out runs/housing-numpy-gd $(HOUSING_FLAGS)
	$(PY) housing.py --impl numpy --method sgd --out runs/housing-numpy-sgd $(HOUSING_FLAGS)
	$(PY) housing.py --impl paddle --out runs/housing $(HOUSING_FLAGS)

bench: $(TEST_STAMP)  ## speed: ours vs the tutorial's way vs PyTorch (make bench-env first); results/bench.json
	$(PY) -m pytest -q tests/test_bench.py
	$(PY) tools/bench.py $(if $(DATA_DIR),--data-dir $(DATA_DIR))

bench-env:  ## PyTorch in its own environment (.venv-torch) for make bench, so it runs at its own defaults
	$(PYTHON) -m venv .venv-torch
	.venv-torch/bin/pip install --disable-pip-version-check -q torch==2.13.0 numpy==2.4.6

notebooks: $(STAMP)  ## write notebooks/<stage>.ipynb from the scripts (self-contained: one file to upload to AI Studio)
	$(PY) tools/make_notebooks.py

lint: $(TEST_STAMP)  ## ruff: pycodestyle + pyflakes, lines <= 100 characters (rules in ruff.toml)
	$(PY) -m ruff check --no-cache .

# `make test` runs the tests in two pytest processes side by side (halves of about equal time):
# on 2 cores two at once take about half as long.
# The first half's output follows the second's; the target fails if either half fails or collects
# no test (a skipped test passes, except under STRICT_SKIPS=1, as .ci/run sets it). Left out for
# their time: the tests marked `whole` (the README's commands in order, make all FAST=1, a Ctrl-C
# in a real terminal under the launcher) and `install` (make install from nothing, make test's
# install where uv fails), which `make test-whole` runs (.ci/run runs both targets),
# and tests/test_bench.py (`make bench`).
TESTS_FIRST_HALF = tests/test_notebooks.py tests/test_golden.py tests/test_reliability.py \
	tests/test_resume_golden.py tests/test_faults.py tests/test_ctrl_c.py
ALL_TESTS = tests --ignore=tests/test_bench.py
# e.g. make test PYTEST_ARGS=--durations=30 (after the target's own arguments: a -m there wins)
PYTEST_ARGS ?=
# two pytest processes at once: $(call halves,FIRST HALF'S ARGUMENTS,THE OTHER HALF'S ARGUMENTS)
halves = @log=$$(mktemp); ($(PY) -m pytest -q -rs $(1) $(PYTEST_ARGS) > $$log 2>&1; echo $$? >> $$log.rc) & \
	$(PY) -m pytest -q -rs $(2) $(PYTEST_ARGS); second=$$?; \
	wait; echo "---- the first half:"; cat $$log; first=$$(cat $$log.rc); rm -f $$log $$log.rc; \
	test "$$first" = 0 && test "$$second" = 0
QUICK = -m "not install and not whole"

test: lint  ## lint, then the tests (offline, synthetic data, ~4 min on 2 cores; installs requirements-test.txt)
	$(call halves,$(QUICK) $(TESTS_FIRST_HALF),$(QUICK) $(ALL_TESTS) $(addprefix --ignore=,$(TESTS_FIRST_HALF)))

test-whole: $(TEST_STAMP)  ## what make test leaves out for its time: the README's commands in order, make all FAST=1, a Ctrl-C in a terminal under the launcher, make install from nothing, make test's install where uv fails (~3 min, network; CI runs it)
	$(call halves,-m whole $(ALL_TESTS),-m install $(ALL_TESTS))

compat: $(TEST_STAMP)  ## Python 3.9-3.13 pinned, PaddlePaddle 2.6.2/3.0.0/3.2.2 on 3.10: train, resume ==, predict, golden (~6 min + installs); then an AI Studio stand-in, tests/compat_aistudio.py: mnist_cnn.ipynb + resume.ipynb in 3.10 venvs of only AI Studio's packages, paddle 3.2.2/2.6.2 (~3 min + installs)
	$(PY) tests/compat.py; first=$$?; $(PY) tests/compat_aistudio.py && exit $$first

golden: $(TEST_STAMP)  ## add this machine's entry to tests/golden/*.json (ARGS=--fresh: drop the others; review the diff)
	$(PY) tests/make_golden.py $(ARGS)

clean:  ## remove runs/, checkpoint/, results/ and log/ (NPROC's worker logs); not .venv, nor work/ (your data)
	rm -rf runs checkpoint results log
