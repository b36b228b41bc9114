# `make quickstart` and `make test` both create .venv from requirements.lock when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export PYTHONPATH := $(CURDIR)
export TF_CPP_MIN_LOG_LEVEL := 2
# XLA programs compiled once are reused by later processes (scripts, tests, quickstart): compiling dominates short
# runs on CPU. Entries are keyed by the program and the jax version, so a stale one is never used.
export JAX_COMPILATION_CACHE_DIR ?= $(CURDIR)/.cache/jax
# The CPU builds of torch (requirements-test.lock) live only on PyTorch's index; PyPI has the CUDA ones (several GB).
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

.PHONY: quickstart export reports sweep-report docs test test-slow test-all benchmark lock lock-accelerators clean

# On NVIDIA GPUs or Cloud TPUs: `make ACCELERATOR=cuda quickstart` (or tpu) also installs
# requirements-$(ACCELERATOR).lock, the pinned packages jax needs for that accelerator.
ACCELERATOR ?=
INSTALLED := $(VENV)/.installed $(if $(ACCELERATOR),$(VENV)/.installed-$(ACCELERATOR))

# The package installs only msp (setup.cfg): installed top-level `experiments` and `data_pipelines` would shadow a
# user's own folders of those names. The scripts import both from the checkout: msp-repository.pth in the venv's
# site-packages puts the repository root on sys.path, so `python experiments/meta_train.py ...` runs from the root
# with the venv active and no PYTHONPATH. A venv made before the rename holds the old editable distribution `msp`
# (which mapped all three packages): it is removed first.
$(VENV)/.installed: requirements.lock setup.cfg
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip uninstall --quiet --yes msp 2>/dev/null || true
	$(PY) -m pip install --quiet --no-deps -e .
	echo "$(CURDIR)" > "$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/msp-repository.pth"
	touch $@

# The test-only extra (CPU PyTorch for reference forwards). Tried without PyTorch's index first: where pip finds the
# wheel locally (find-links), an unreachable index would only cost retries.
$(VENV)/.installed-test: $(VENV)/.installed requirements-test.lock
	$(PY) -m pip install --quiet -r requirements-test.lock || \
	  $(PY) -m pip install --quiet --extra-index-url $(TORCH_CPU_INDEX) -r requirements-test.lock
	touch $@

$(VENV)/.installed-cuda $(VENV)/.installed-tpu: $(VENV)/.installed-%: $(VENV)/.installed requirements-%.lock
	$(PY) -m pip install --quiet -r requirements-$*.lock
	touch $@

quickstart: $(INSTALLED)
	$(PY) experiments/quickstart.py --workdir=runs/quickstart

# The quickstart's network, physically pruned: artifact and report in runs/quickstart/export.
export: $(INSTALLED)
	$(PY) experiments/export.py --workdir=runs/quickstart --out=runs/quickstart/export

# Every report the README and docs/ quote, rerun from scratch into runs/reports/ (each records its commit and
# command); about 30 min on 2 CPU cores. docs/ keeps copies made this way.
REPORTS := runs/reports
reports: $(VENV)/.installed
	rm -rf runs/quickstart_seeds runs/variants $(REPORTS)
	$(PY) experiments/reports/seed_variation.py --seeds=0,1,2 --workdir=runs/quickstart_seeds --out=$(REPORTS)/quickstart_seeds
	$(PY) experiments/export.py --workdir=runs/quickstart_seeds/seed0 --out=$(REPORTS)/export
	$(PY) experiments/reports/synthetic_variants.py --workdir=runs/variants --out=$(REPORTS)/synthetic_variants
	$(PY) experiments/reports/synthetic_preview.py --out=$(REPORTS)/synthetic_preview.png
	$(PY) experiments/reports/lambda_trajectories.py --out=$(REPORTS)/lambda_report

# The comparison sweep of the README's "Does learned sparsity pay?" and its tables (hours on 2 CPU cores, so not
# part of `reports`). Resumable: rerun to finish an interrupted sweep; SWEEP_FLAGS="--shard=1/2" and "--shard=2/2"
# in two processes share it (the tables need every slice finished: rerun without SWEEP_FLAGS after).
SWEEP := runs/sweep
sweep-report: $(VENV)/.installed
	$(PY) experiments/sweep.py --config=experiments/configs/sweep.py:synthetic --workdir=$(SWEEP) $(SWEEP_FLAGS)
	$(PY) experiments/reports/tables.py --runs='$(SWEEP)/*/seed*' --baseline='$(SWEEP)/single_task*/seed*' \
	  --out=$(REPORTS)/sweep_synthetic

# docs/configuration.md is generated from the config schema (msp/train/config.py); a test checks it is current.
docs: $(VENV)/.installed
	$(PY) -c "from msp.train.config import schema_markdown; print(schema_markdown())" > docs/configuration.md

# Two workers, one test file each at a time (module fixtures are built once per file). `test` is the suite a
# change must pass (under 10 minutes on 2 cores); `test-slow` the end-to-end and multi-device tests (CI runs both).
test: $(VENV)/.installed-test
	$(PY) -m pytest -q -n 2 --dist loadfile -m "not slow" tests

test-slow: $(VENV)/.installed-test
	$(PY) -m pytest -q -n 2 --dist loadfile -m slow tests

test-all: test test-slow

benchmark: $(VENV)/.installed
	$(PY) benchmarks/meta_step.py --config.image_size=16 --config.meta.episodes=4

# Re-resolve every transitive version from requirements.in (needs the package registry), then what
# requirements-test.in adds on top of it: the lines of a second freeze that are not in requirements.lock (--all, as
# torch needs a newer setuptools than the venv's own).
lock:
	rm -rf /tmp/msp-lock-venv && $(PYTHON) -m venv /tmp/msp-lock-venv
	/tmp/msp-lock-venv/bin/pip install --quiet -r requirements.in
	{ echo "# Every transitive version, resolved from requirements.in with Python 3.11 (pip freeze). Regenerate: make lock"; \
	  /tmp/msp-lock-venv/bin/pip freeze; } > requirements.lock
	/tmp/msp-lock-venv/bin/pip install --quiet --extra-index-url $(TORCH_CPU_INDEX) -r requirements-test.in
	{ echo "# Test-only extra: every transitive version that requirements-test.in adds on top of requirements.lock (Python 3.11,"; \
	  echo "# pip freeze --all); make test and make test-slow install it into .venv after requirements.lock. Regenerate: make lock"; \
	  echo "# torch==2.13.0+cpu is the CPU build (PyPI has only the CUDA builds, several GB), found on"; \
	  echo "# $(TORCH_CPU_INDEX) (the Makefile retries with that index when pip cannot find it otherwise)."; \
	  echo "# fsspec and typing_extensions, which torch also needs, are pinned in requirements.lock."; \
	  /tmp/msp-lock-venv/bin/pip freeze --all --exclude pip | grep -vxFf requirements.lock; } > requirements-test.lock

# What jax[cuda12] and jax[tpu] of the locked jax, and gcsfs (gs:// paths through etils.epath: pods and clusters
# keep runs in buckets), add to requirements.lock, resolved by pip within its pins without installing.
GCSFS := gcsfs==2026.10.1
lock-accelerators:
	for kind in cuda:cuda12 tpu:tpu; do \
	  $(PYTHON) -m pip install --dry-run --ignore-installed --quiet --report /tmp/msp-lock-$${kind%%:*}.json \
	    -c requirements.lock "jax[$${kind##*:}]==$$(sed -n 's/^jax==//p' requirements.lock)" "$(GCSFS)" && \
	  { sed -n '1,/Regenerate: make lock-accelerators/p' requirements-$${kind%%:*}.lock; $(PYTHON) -c "import json, re, sys; \
	    norm = lambda n: re.sub(r'[-_.]+', '-', n).lower(); \
	    locked = {norm(l.split('==')[0]) for l in open('requirements.lock') if '==' in l}; \
	    new = [p['metadata'] for p in json.load(open(sys.argv[1]))['install']]; \
	    print(*sorted(f\"{m['name']}=={m['version']}\" for m in new if norm(m['name']) not in locked), sep='\n')" \
	    /tmp/msp-lock-$${kind%%:*}.json; } > requirements-$${kind%%:*}.lock.new && \
	  mv requirements-$${kind%%:*}.lock.new requirements-$${kind%%:*}.lock; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .cache
