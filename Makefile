# lowbit developer commands: make venv | test | test-all | test-gpu | demo | clean
#
# Install decision (also in README.md, "Install"):
# * CI and the tests use torch 2.13.0, the CPU wheel on this machine's disk (pip finds it
#   through its configured find-links): ~190 MB, no CUDA.  From an empty .venv the set-up
#   takes 1.3 to 3 minutes on 2 cores (see README.md, "Install").  CI is CPU-only by design.
# * triton 3.6.0 sits beside it: it is the GPU machine's Triton, so the Triton kernels that
#   CI runs under TRITON_INTERPRET=1 are checked against the version that will compile them.
# * torchvision is not needed by the fast tier.  An issue that needs it switches with
#   `make TORCH=vision venv`: torch 2.14.1 + torchvision 0.29.1 (both on disk, a 5.5 GB CUDA
#   build, ~2.5 min); that torch pins its own Triton 3.8, so no Triton is requested then.
#   Switching flavour rebuilds .venv from scratch: downgrading in place would leave packages
#   pinned to the other torch.
#
# Re-runs are fast: a stamp file per flavour records a finished install and is redone only
# when pyproject.toml (or this Makefile) changes.

# bash with pipefail: pip's output is filtered below and its exit status must survive the pipe.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c

PYTHON ?= python3
VENV ?= .venv
TORCH ?= cpu

ifeq ($(TORCH),cpu)
TORCH_SPEC ?= torch==2.13.0
TRITON_SPEC ?= triton==3.6.0
else ifeq ($(TORCH),vision)
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
TRITON_SPEC ?=
else
$(error TORCH must be cpu (default) or vision; got '$(TORCH)')
endif

PY := $(VENV)/bin/python
# This machine's pip lists two local extra indexes that hold only some packages; pip warns once
# per package missing from them.  The warnings are noise, so they are dropped.
PIP := $(PY) -m pip install -q --progress-bar off
PIP_FILTER := sed '/is ignored: it is neither a file nor a directory/d'
# GOMP_SPINCOUNT=0: idle OpenMP threads of torch sleep instead of spinning, so they do not
# starve numba's kernels on a busy 2-core machine (a tiny training step: 2.7-8.7 s -> 0.1-0.7 s).
PYTEST := GOMP_SPINCOUNT=0 $(PY) -m pytest -q
FLAVOUR := $(VENV)/.flavour-$(TORCH)
STAMP_BASE := $(VENV)/.stamp-base-$(TORCH)
STAMP_TEST := $(VENV)/.stamp-test-$(TORCH)

# pytest exits 5 when a marker selection holds no test (e.g. no gpu test yet).  That is not a
# failure of the code, so it passes here, loudly; every other non-zero status fails.
define run_pytest
	$(PYTEST) $(1); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make: pytest selected no tests (exit 5); treated as success"; exit 0; fi; \
	exit $$rc
endef

.PHONY: venv test test-all test-gpu demo clean

venv: $(STAMP_TEST)

test: $(STAMP_TEST)
	@$(call run_pytest,-n 2 -m "not slow and not gpu")

test-all: $(STAMP_TEST)
	@$(call run_pytest,-n 2 -m "not gpu")

# GPU tests skip themselves without a GPU; run this on the GPU machine's own stack.
test-gpu: $(STAMP_TEST)
	@$(call run_pytest,-m gpu)

demo: $(STAMP_BASE)
	$(VENV)/bin/lowbit demo

$(FLAVOUR):
	@if ls $(VENV)/.flavour-* >/dev/null 2>&1; then \
		echo "make: $(VENV) holds another torch flavour; rebuilding it"; rm -rf $(VENV); fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	touch $@

# The test install is a superset of the base one, so it satisfies `make demo` too.
$(STAMP_TEST): pyproject.toml Makefile $(FLAVOUR)
	$(PIP) -e '.[test]' $(TORCH_SPEC) $(TRITON_SPEC) 2>&1 | $(PIP_FILTER)
	touch $@ $(STAMP_BASE)

$(STAMP_BASE): pyproject.toml Makefile $(FLAVOUR)
	@if [ -f $(STAMP_TEST) ] && [ $(STAMP_TEST) -nt pyproject.toml ] && [ $(STAMP_TEST) -nt Makefile ]; then \
		echo "make: using the test install in $(VENV)"; \
	else \
		echo "$(PIP) -e . $(TORCH_SPEC)"; $(PIP) -e . $(TORCH_SPEC) 2>&1 | $(PIP_FILTER); \
	fi
	touch $@

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
