# sf-dl-car-classification: a reproducible notebook series. `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.NOTPARALLEL:

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
GPU ?=
DATA_DIR ?=
PROFILE ?=
VIRTUAL_DEVICES ?=
VERBOSE ?=


# The series in run order: notebooks/NN_topic.py (lib.paths.series_notebooks reads the same files), and every run of
# it: 03_convnext is notebook 03 with its own profile file, run right after 03_xception (lib.paths.MODEL_RUNS; the
# same list as `python -m lib.paths series`, which tests/test_paths.py compares with `make series`).
NOTEBOOKS := $(sort $(basename $(notdir $(wildcard notebooks/[0-9][0-9]_*.py))))
SERIES := $(patsubst 03_xception,03_xception 03_convnext,$(NOTEBOOKS))
# Resolved lazily, once the environment exists, and then only once (the first use replaces each variable with its
# value): the data folder in use, the profile that suits it, the output folders.
DATA = $(eval DATA := $$(shell $$(PY) -m lib.paths data-dir $$(DATA_DIR)))$(DATA)
PROF = $(eval PROF := $$(or $$(PROFILE),$$(shell $$(PY) -m lib.paths profile $$(DATA_DIR))))$(PROF)
RUNS = $(eval RUNS := $$(shell $$(PY) -m lib.paths runs-dir))$(RUNS)
SUBMISSIONS = $(eval SUBMISSIONS := $$(shell $$(PY) -m lib.paths submissions-dir))$(SUBMISSIONS)

# Test files whose code must also run on JAX without TensorFlow (no notebooks, no matplotlib there).
JAX_TESTS := tests/test_jax_backend.py tests/test_pipeline.py tests/test_images.py tests/test_augment.py \
	tests/test_schedules.py tests/test_lr_find.py tests/test_ensemble.py tests/test_metrics.py \
	tests/test_predict.py tests/test_resume.py tests/test_distributed.py tests/test_gradcam.py tests/test_calibration.py

# lib on the oldest versions it claims for Kaggle's image (requirements-kaggle.txt; unverified against it), Python
# 3.12: the tiny training (K-fold, budget-stopped, two replicas), TTA, the 05 blend on the K-fold runs' outputs,
# the pieces they run on (data, images, models, submission) and the version check that the kernel bundle runs first.
PYTHON312 ?= python3.12
KAGGLE_OLDEST_TESTS := tests/test_versions.py tests/test_data.py tests/test_images.py tests/test_augment.py \
	tests/test_pipeline.py tests/test_models.py tests/test_schedules.py tests/test_lr_find.py tests/test_predict.py \
	tests/test_ensemble.py tests/test_calibration.py tests/test_metrics.py tests/test_submission.py tests/test_experiment.py \
	tests/test_train.py::test_budget_ends_training_and_is_recorded \
	tests/test_distributed.py::test_two_replicas_train_the_same_model_as_one_device_at_the_same_global_batch

.PHONY: help venv hooks prepare run-all report lab $(SERIES) series notebooks score test test-fast test-unit test-jax \
	test-kaggle-oldest lint format bench bench-duplicates clean

help: ## List the targets
	@if [ -t 1 ]; then on=$$'\033[36m' off=$$'\033[0m'; else on= off=; fi; \
		grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) \
		| awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "}; {printf "  %s%-26s%s %s\n", on, $$1, off, $$2}'
	@echo "  Variables: DATA_DIR=<folder in the competition layout>  PROFILE=demo|full|tiny  GPU=1  FORCE=1 (rerun)  FILE=  MSG="
	@echo "             PYTHON=python3.11 (the Python that creates .venv)  PYTHON312= (the oldest-Kaggle test job)"
	@echo "             VERBOSE=1 (papermill's full cell log; otherwise it is in runs/<profile>/<notebook>/<notebook>.log)"
	@echo "             VIRTUAL_DEVICES=N (split the CPU into N devices to try distribution)  ACCELERATOR=gpu|tpu|none (Kaggle)"
	@echo "             Kaggle: SUBMIT=1  WEIGHTS=1 (fetch weights too)  TIMEOUT=13h  POLL=60  WEIGHTS_DATASET=owner/slug|none"

# ---------------------------------------------------------------- environment
venv: $(VENV)/.installed ## Create .venv from requirements.txt (GPU=1: GPU TensorFlow via requirements-gpu.txt)

$(VENV)/.installed: requirements.txt requirements-gpu.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifeq ($(GPU),)
	$(PY) -m pip install -q -r requirements.txt
else
	grep -v '^tensorflow-cpu' requirements.txt > $(VENV)/requirements-gpu-resolved.txt
	$(PY) -m pip install -q -r $(VENV)/requirements-gpu-resolved.txt -r requirements-gpu.txt
endif
	$(PY) -m pip install -q --no-deps -e .  # `import lib` from anywhere (notebooks/, Jupyter) via the project's metadata
	@touch $@

hooks: | venv ## Install the git pre-commit hooks (ruff, jupytext --sync) from .pre-commit-config.yaml
	$(PY) -m pip install -q pre-commit
	$(VENV)/bin/pre-commit install

# ---------------------------------------------------------------- the series
prepare: | venv ## Find the data (DATA_DIR, else data/, else the offline demo, generated once) and check its layout
	@$(PY) -m lib.data prepare $(if $(DATA_DIR),--data-dir "$(DATA_DIR)")

notebooks: $(NOTEBOOKS:%=notebooks/%.ipynb) ## Build/sync the .ipynb notebooks from their percent-format .py sources

notebooks/%.ipynb: notebooks/%.py | venv
	@$(VENV)/bin/jupytext --quiet --update --to ipynb --set-kernel python3 $<

# One notebook headless into its run folder (python -m tools.runner run), only when one of its inputs changed since
# its last success: its source, its profile, the lib modules it imports (followed through lib), the data's CSVs and
# the probabilities of the runs it reads (05, 06); FORCE=1 runs it anyway. Its profile and -p values are checked
# against its parameters cell first (no kernel starts on a misspelt name or value). A failure keeps the last good
# executed notebook and writes the failed one beside it as <name>.failed.ipynb, named in the error. The terminal
# gets a cell bar, the lines worth reading and one result line; all the kernel printed goes to <name>.log in the
# run folder (VERBOSE=1: papermill's full cell log on the terminal too). Under `make -n` (the `+` runs the line
# anyway) it only says which notebooks would run and which of their inputs changed. Training itself resumes.
dry_run = $(findstring n,$(firstword -$(MAKEFLAGS)))
define run_notebook
	+@$(if $(VIRTUAL_DEVICES),CARS_VIRTUAL_DEVICES=$(VIRTUAL_DEVICES)) $(PY) -m tools.runner run $(1) --profile $(PROF) \
		--data-dir "$(DATA)" $(if $(FORCE),--force) $(if $(dry_run),--dry-run) $(if $(VERBOSE),--verbose) \
		$(if $(VIRTUAL_DEVICES),--setting virtual_devices "$(VIRTUAL_DEVICES)")
endef

# After a model notebook alone: the ensemble's submission.csv is older than the probabilities it blends.
define stale_ensemble
	@if [ -f $(SUBMISSIONS)/submission.csv ] && [ $(RUNS)/$(PROF)/$(1)/probs_test.csv -nt $(SUBMISSIONS)/submission.csv ]; then \
		echo "Note: $(SUBMISSIONS)/submission.csv predates this $(1) run; \`make 05_ensemble\` blends the new one"; fi
endef

01_eda: notebooks/01_eda.ipynb prepare ## Notebook 01: class balance, image sizes, samples, problem files
	$(call run_notebook,$@)
02_augmentation_preview: notebooks/02_augmentation_preview.ipynb prepare ## Notebook 02: augmentation presets preview
	$(call run_notebook,$@)
03_xception: notebooks/03_xception.ipynb prepare ## Notebook 03: Xception in stages, TTA, submissions/xception.csv
	$(call run_notebook,$@)
	$(call stale_ensemble,$@)
03_convnext: notebooks/03_xception.ipynb prepare ## Notebook 03 with ConvNeXt (profiles/<profile>/03_convnext.yaml), submissions/convnext.csv
	$(call run_notebook,$@)
	$(call stale_ensemble,$@)
04_efficientnetb7: notebooks/04_efficientnetb7.ipynb prepare ## Notebook 04: EfficientNetB7, time-budgeted, submissions/efficientnetb7.csv
	$(call run_notebook,$@)
	$(call stale_ensemble,$@)
05_ensemble: notebooks/05_ensemble.ipynb prepare ## Notebook 05: weighted ensemble of the model runs, submissions/submission.csv
	$(call run_notebook,$@)
06_error_analysis: notebooks/06_error_analysis.ipynb prepare ## Notebook 06: per-class errors, confused pairs, mistakes, Grad-CAM, calibration
	$(call run_notebook,$@)

run-all: prepare $(SERIES) ## Run the series in order (demo data when no competition data is found), then `make report`
	@echo "Done. Submissions: $$(ls $(SUBMISSIONS)/*.csv | tr '\n' ' '); executed notebooks in $(RUNS)/$(PROF)/"
	@$(PY) -m tools.report $(PROF)

series: ## The runs of `make run-all`, in its order (lib.paths.series_runs)
	@echo $(SERIES)

report: | venv ## HTML report of a profile's runs (PROFILE=): reports/<profile>/index.html, one table, each notebook rendered
	@$(PY) -m tools.report $(PROF)

# JupyterLab on .venv with jupytext: notebooks/*.py open as notebooks, paired with their .ipynb (jupytext.toml).
# Its server options live in jupyter_server_config.py at the repo root, which JUPYTER_CONFIG_PATH adds to the files
# Jupyter reads (after the user's own ~/.jupyter); tests/test_lab.py starts a headless server the same way.
lab: $(VENV)/.lab-installed ## JupyterLab on the project's environment; notebooks/*.py open as notebooks
	JUPYTER_CONFIG_PATH=$(CURDIR) $(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root)  # root: containers, Kaggle-like images

$(VENV)/.lab-installed: requirements-lab.txt | venv
	$(PY) -m pip install -q -r requirements-lab.txt
	@# A double click opens notebooks/*.py as a notebook, not as text (jupytext's own setting, kept in .venv)
	$(VENV)/bin/jupytext-config --settings-file $(VENV)/etc/jupyter/labconfig/default_setting_overrides.json \
		set-default-viewer python
	@touch $@

score: | venv ## Accuracy of FILE= (default submissions/submission.csv) on the demo's hidden test labels
	@$(PY) -m lib.submission score $(or $(FILE),$(SUBMISSIONS)/submission.csv) --labels "$(DATA)/test_labels.csv"

# ---------------------------------------------------------------- checks
LINTED := lib tests bench tools

# pytest-xdist workers per job: one per core, at most 4 (each loads TensorFlow or JAX). A test file stays on one
# worker (--dist loadfile), so a module's fixtures, like the end-to-end run, are built once.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
PYTEST = -m pytest -q -p no:cacheprovider -n $(TEST_WORKERS) --dist loadfile

test: lint test-unit test-jax test-kaggle-oldest ## Everything: lint, then the TensorFlow, JAX-only and oldest-Kaggle test jobs

test-fast: | venv ## The edit-test loop: unit tests only (no training, no notebooks, no second environment)
	$(PY) $(PYTEST) -m "not slow and not jax"

lint: | venv ## ruff check + ruff format --check, and every notebook .py/.ipynb pair in sync
	$(VENV)/bin/ruff check $(LINTED) notebooks/*.py
	$(VENV)/bin/ruff format --check $(LINTED)
	$(PY) tools/check_notebook_pairs.py

format: | venv ## Fix what ruff can (imports, formatting) and rebuild the .ipynb notebooks from their .py sources
	$(VENV)/bin/ruff check --fix $(LINTED) notebooks/*.py
	$(VENV)/bin/ruff format $(LINTED)
	@$(MAKE) --no-print-directory notebooks  # the .py files are the source: --sync would add a YAML header to them

test-unit: notebooks | venv ## Run the tests in the TensorFlow environment (the notebooks built first: tests run make beside each other)
	$(PY) $(PYTEST) -m "not jax"

test-jax: .venv-jax/.installed ## Run the JAX-backend job: tiny training + predict with no TensorFlow installed (.venv-jax)
	KERAS_BACKEND=jax .venv-jax/bin/python $(PYTEST) $(JAX_TESTS)

test-kaggle-oldest: .venv-kaggle/.installed ## lib on the oldest claimed Kaggle versions, Python 3.12 (.venv-kaggle)
	.venv-kaggle/bin/python $(PYTEST) $(KAGGLE_OLDEST_TESTS)

# The two test environments are built once and again only when their requirements change.
.venv-jax/.installed: requirements-jax.txt pyproject.toml
	@test -x .venv-jax/bin/python || $(PYTHON) -m venv .venv-jax
	.venv-jax/bin/pip install -q --upgrade pip
	.venv-jax/bin/pip install -q -r requirements-jax.txt
	.venv-jax/bin/pip install -q --no-deps -e .
	@touch $@

# A pyenv shim runs python3.12 only when told the version (PYENV_VERSION); elsewhere that variable is ignored.
.venv-kaggle/.installed: requirements-kaggle.txt pyproject.toml
	@test -x .venv-kaggle/bin/python || $(PYTHON312) -m venv .venv-kaggle 2>/dev/null \
		|| PYENV_VERSION=3.12 $(PYTHON312) -m venv .venv-kaggle \
		|| { echo "error: no Python 3.12 at PYTHON312=$(PYTHON312): install it or point PYTHON312= to one" >&2; exit 1; }
	.venv-kaggle/bin/pip install -q --upgrade pip
	.venv-kaggle/bin/pip install -q -r requirements-kaggle.txt
	.venv-kaggle/bin/pip install -q --no-deps -e .
	@touch $@

bench: | venv ## Benchmarks: the input pipeline (decode, ImageDataGenerator, cold/cached, TTA), then training three ways
	$(PY) -m bench.pipeline
	$(PY) -m bench.training

bench-duplicates: | venv ## Duplicate scan on generated real-size photos (15,561 + 6,675 640x480 JPEGs; PHOTOS=N fewer)
	$(PY) bench/duplicates.py $(if $(PHOTOS),--photos $(PHOTOS))

clean: ## Remove runs, reports, submissions, built notebooks and the generated demo data (keeps real data and .venv); says how much it freed
	@shopt -s nullglob; found=(); labels=(); \
	for dir in runs reports submissions build data/demo data/demo.partial; do \
		[[ -e $$dir ]] && found+=("$$dir") && labels+=("$$dir/"); done; \
	built=(notebooks/*.ipynb); (( $${#built[@]} )) && found+=("$${built[@]}") && labels+=("notebooks/*.ipynb"); \
	kib=$$( (( $${#found[@]} )) && du -sk "$${found[@]}" | awk '{s += $$1} END {print s}' || echo 0); \
	rm -rf "$${found[@]}"; \
	awk -v kib="$$kib" -v what="$${labels[*]}" 'BEGIN { b = kib * 1024; gsub(/ /, ", ", what); \
		size = b >= 1e9 ? sprintf("%.1f GB", b / 1e9) : sprintf("%.0f MB", b / 1e6); \
		print what == "" ? "Nothing to remove." : "Freed " size " (" what ")" }'

include kaggle.mk
