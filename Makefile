# groundkey — two commands on a fresh Debian/Ubuntu machine:
#   make demo   one full simulated key-exchange pass on embedded defaults
#   make test   everything CI checks: ruff, mypy --strict, import contracts, pytest
SHELL := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEBIAN_PACKAGES := mosquitto mosquitto-clients libhamlib-utils
PACKAGES := protocol/groundkey_protocol drivers/groundkey_drivers daemon/groundkey_daemon firmware-sim/groundkey_sim

.PHONY: demo test lint typecheck contracts pytest bench system-deps venv clean

demo: venv
	$(BIN)/groundkey demo

test: venv system-deps lint typecheck contracts pytest

venv: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "groundkey needs Python >= 3.11"' \
	  || { echo "groundkey needs Python 3.11 or newer (apt-get install python3 python3-venv)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) \
	  || { echo "cannot create a virtualenv: apt-get install python3-venv"; exit 1; }
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# Debian packages the tests use as real peers: a mosquitto broker and client,
# Hamlib's rotctl/rotctld. Installed with apt-get when running as root.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_sub >/dev/null || missing="$$missing mosquitto-clients"; \
	command -v rotctld >/dev/null || missing="$$missing libhamlib-utils"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing"; \
	    echo "install them with: sudo apt-get install$$missing"; \
	    if [ "$$CI" = "true" ]; then exit 1; fi; \
	  fi; \
	fi

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: venv
	$(BIN)/mypy $(PACKAGES)

contracts: venv
	$(BIN)/lint-imports

pytest: venv
	$(BIN)/pytest

bench: venv
	$(BIN)/groundkey bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
