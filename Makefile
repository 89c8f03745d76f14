# The two commands a newcomer needs: `make lab` (open the course) and `make test` (run every test).
# Both create the virtual environment on first use and skip the install when nothing changed.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.labkit-installed

.PHONY: setup lab test unit notebooks site clean-venv

setup: $(STAMP)

# JupyterLab's settings overrides (no news pop-up, no update check: the course runs offline) go where the
# environment's JupyterLab reads them.
$(STAMP): pyproject.toml .jupyterlab-overrides.json
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	mkdir -p $(VENV)/share/jupyter/lab/settings
	cp .jupyterlab-overrides.json $(VENV)/share/jupyter/lab/settings/overrides.json
	touch $(STAMP)

# Root (containers, CI) must opt in explicitly; everyone else gets JupyterLab's defaults.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(ROOT_FLAG) $(LAB_ARGS)

# Quick mode shrinks subsets and epochs for notebooks and slow tests; the math is unchanged.
test: $(STAMP)
	LABKIT_QUICK=1 $(PY) -m pytest $(PYTEST_ARGS)

unit: $(STAMP)
	LABKIT_QUICK=1 $(PY) -m pytest tests $(PYTEST_ARGS)

notebooks: $(STAMP)
	LABKIT_QUICK=1 $(PY) -m pytest notebooks $(PYTEST_ARGS)

# The course as a static website in build/site/_build/html (the committed outputs, not re-run): docs/site/build.py.
site: $(STAMP)
	$(PY) docs/site/build.py --out build/site

clean-venv:
	rm -rf $(VENV)

# Student copies of the notebooks in student/ (gitignored): the exercises' solutions replaced by stubs.
.PHONY: student
student: $(STAMP)
	$(PY) -m labkit.students notebooks/*.ipynb --out student

# Run every notebook in full mode (about 2 hours on 2 cores with a warm teacher-logit cache) and keep the outputs in the committed notebooks;
# writes times and peak memory to benchmarks/results/notebook_runs.json. One notebook: make outputs NOTEBOOKS=notebooks/05_distill_student.ipynb
# MEMORY_LIMIT=1536 runs each notebook under a hard 1.5 GiB memory limit, as on Binder (Linux, as root).
.PHONY: outputs
outputs: $(STAMP)
	$(PY) benchmarks/notebook_runs.py --inplace $(if $(MEMORY_LIMIT),--memory-limit $(MEMORY_LIMIT)) $(NOTEBOOKS)
