# convkit's two entry points: `make demo` (install + run the pipeline on the embedded sample, CPU) and
# `make test` (install + run the test suite). The virtualenv lives at a fixed path outside the clone and is
# reused while the lock file's hash is unchanged; torch.compile's cache persists beside it.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
CACHE ?= $(HOME)/.cache/convkit
VENV ?= $(CACHE)/venv
LOCK := docker/requirements.lock
OUT ?= runs
PYTEST_ARGS ?=
export TORCHINDUCTOR_CACHE_DIR ?= $(CACHE)/inductor
export CONVKIT_CACHE ?= $(CACHE)

.PHONY: venv install demo test lock bench clean

venv:
	@want=$$(sha256sum $(LOCK) | cut -d' ' -f1); \
	if [ "$$(cat $(VENV)/.lock-sha256 2>/dev/null)" != "$$want" ]; then \
	  echo "creating $(VENV) from $(LOCK)"; \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && \
	  $(VENV)/bin/pip install --quiet --require-hashes --no-deps -r $(LOCK) 2>&1 | { grep -v "^WARNING: Location" || true; } && \
	  echo $$want > $(VENV)/.lock-sha256; \
	else echo "reusing $(VENV) (lock $${want:0:12})"; fi

install: venv
	@$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation --force-reinstall . 2>&1 | { grep -v "^WARNING: Location" || true; }
	@$(VENV)/bin/convkit --version

demo: install
	$(VENV)/bin/convkit train-all --sample --epochs 1 --batch-size 64 --device cpu --out $(OUT) --overwrite \
	  --max-images t6-bottleneck=200 --max-images t6-wide=200 --corruptions gaussian_noise,contrast --severities 3

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lock:
	bash docker/lock.sh

bench: install
	$(VENV)/bin/python bench/train_throughput.py --device cpu

clean:
	rm -rf build *.egg-info runs
