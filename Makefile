# visionllama_mm: the README's commands. `make demo` and `make test` build the env when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.visionllama_mm-env
# pytest workers: this project's CI has 2 cores
PYTEST_ARGS ?=

.PHONY: env demo test test-all lint format bench bench-gpu bench-latents reproduce \
	clean-env

env: $(STAMP)

$(STAMP): requirements/constraints.txt requirements/runtime.txt requirements/mminstall.txt requirements/tests.txt setup.cfg setup.py
	@echo "[env] creating $(VENV) (first run on a fresh machine: ~15-20 min, mostly the mmcv source build)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade 'pip<25' wheel
	$(PIP) install -q -c $(CONSTRAINTS) 'torch===2.13.0' torchvision 'numpy<2' ninja
	@# mmcv 2.1.0 has no wheel for this torch: build it (ops included) once, with the old
	@# setuptools its setup.py needs (pkg_resources); pip's wheel cache keeps the result.
	$(PY) -c "import mmcv.ops" 2>/dev/null || { \
	  $(PIP) install -q 'setuptools<70' && \
	  MMCV_WITH_OPS=1 MAX_JOBS=2 $(PIP) install -c $(CONSTRAINTS) --no-build-isolation 'mmcv==2.1.0'; }
	$(PIP) install -q -c $(CONSTRAINTS) -r requirements/runtime.txt -r requirements/mminstall.txt -r requirements/tests.txt
	$(PIP) install -q -c $(CONSTRAINTS) --no-build-isolation --no-deps -e .
	$(PY) -c "import mmcv.ops, mmpretrain.models, mmseg.models, mmdet.models, mmagic.models, visionllama_mm; print('[env] ok')"
	touch $(STAMP)

demo: env
	$(PY) tools/quickstart.py

# the paper's claims at small scale (README "Reproducing the paper's
# claims"): `make reproduce CLAIM=resolution SEEDS="0 1 2"`; CLAIM=all runs
# every one (hours on 2 cores)
CLAIM ?= all
SEEDS ?= 0 1 2
JOBS ?= $(shell nproc 2>/dev/null || echo 1)
reproduce: env
	$(PY) tools/analysis_tools/reproduce_claims.py $(CLAIM) --seeds $(SEEDS) --jobs $(JOBS)

# every Python source of the repository (folders that do not exist yet are
# skipped: flake8 and isort fail on missing paths)
LINT_PATHS := $(wildcard setup.py visionllama_mm tools tests configs)

lint: env
	$(PY) -m flake8 $(LINT_PATHS)
	$(PY) -m isort --check-only --diff $(LINT_PATHS)
	$(PY) -m yapf --diff --recursive $(LINT_PATHS)

format: env
	$(PY) -m isort $(LINT_PATHS)
	$(PY) -m yapf -i --recursive $(LINT_PATHS)

# PYTHONPATH: test this checkout even when the editable install of the
# environment points at another one (git worktrees sharing a .venv)
test: env lint
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(PY) -m pytest -m "not slow" $(PYTEST_ARGS) tests

test-all: env lint
	PYTHONPATH=$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH} $(PY) -m pytest $(PYTEST_ARGS) tests

# make bench: our models against their peers on this machine's CPU (fp32,
# 224 px), eager and compiled, fresh workers interleaved over rounds; add
# OFFICIAL_ROOT=path/to/VisionLLaMA (a checkout of Meituan-AutoML/VisionLLaMA)
# to include the official code, with the packages of its era in
# OFFICIAL_SITE_DEIT (pip install --target DIR timm==0.3.2 --no-deps; the
# pyramid) and OFFICIAL_SITE_DIT (timm==0.9.16; DiT-LLaMA); add
# BASELINE_ROOT=path/to/an/older/checkout to measure this package's own
# change (peer `baseline`). make bench-gpu: the same on CUDA, bf16 autocast,
# flash / memory-efficient SDPA, with MFU.
OFFICIAL_ROOT ?=
OFFICIAL_SITE_DEIT ?=
OFFICIAL_SITE_DIT ?=
BASELINE_ROOT ?=
BENCH := $(PY) tools/analysis_tools/benchmark_backbone.py \
	$(if $(OFFICIAL_ROOT),--official-root $(OFFICIAL_ROOT)) \
	$(if $(BASELINE_ROOT),--baseline-root $(BASELINE_ROOT)) $(BENCH_ARGS)
SITE_DEIT := $(if $(OFFICIAL_SITE_DEIT),--official-site $(OFFICIAL_SITE_DEIT))
SITE_DIT := $(if $(OFFICIAL_SITE_DIT),--official-site $(OFFICIAL_SITE_DIT))

bench: env
	$(BENCH) --model plain --arch base --ffn-hidden-rule llama \
		--batch-size 8 --iters 5 --warmup 2 --rounds 2 --device cpu
	$(BENCH) $(SITE_DEIT) --model pyramid --arch s --batch-size 16 \
		--iters 8 --warmup 2 --rounds 2 --device cpu
	$(BENCH) $(SITE_DIT) --model dit --arch b --img-size 256 \
		--batch-size 16 --iters 8 --warmup 2 --rounds 2 --device cpu

bench-gpu: env
	$(BENCH) --model plain --arch base --ffn-hidden-rule llama \
		--batch-size 64 --iters 20 --warmup 5 --rounds 3 --device cuda --amp
	$(BENCH) $(SITE_DEIT) --model pyramid --arch s --batch-size 128 \
		--iters 20 --warmup 5 --rounds 3 --device cuda --amp
	$(BENCH) $(SITE_DIT) --model dit --arch b --img-size 256 \
		--batch-size 128 --iters 20 --warmup 5 --rounds 3 --device cuda --amp

# training step with cached SD-VAE latents vs encoding on the fly (README)
bench-latents: env
	$(PY) tools/analysis_tools/benchmark_latents.py --arch SiTLLaMA_B_2 \
		--image-size 64 --batch-size 4 --iters 3 --warmup 1 --rounds 2

clean-env:
	rm -rf $(VENV)
