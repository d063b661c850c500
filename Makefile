# Two entry points for a fresh Debian machine with python3 and make:
#   make demo   create .venv, install, run the agent with a simulated engine (PORT=8321)
#   make test   create .venv, install test extras and system packages, run the whole suite
PYTHON ?= python3
PORT   ?= 8321
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test
SYSTEM_PACKAGES := chromium prometheus systemd
# setuptools says "Editable installation." (a notice, 10 lines) on every editable install of a
# package-dir layout like ours; nothing to act on
QUIET_BUILD := PYTHONWARNINGS="ignore:Editable installation"

.PHONY: demo run test test-fast bench tour install system-deps clean

$(PY):
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: on Debian, apt-get install python3-venv"; exit 1; }
	$(PIP) install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(QUIET_BUILD) $(PIP) install --quiet -e .
	touch $@

$(TSTAMP): pyproject.toml | $(PY)
	$(QUIET_BUILD) $(PIP) install --quiet -e '.[test]'
	touch $@ $(STAMP)

# Debian packages the tests drive for real (browser, Prometheus, systemd-analyze); only as root.
system-deps:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  command -v prometheus >/dev/null || missing="$$missing prometheus"; \
	  command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping apt-get (tests needing chromium/prometheus/systemd-analyze fail loudly if absent)"; fi

demo: $(STAMP)
	$(VENV)/bin/infersight demo --listen 127.0.0.1:$(PORT)

run: $(STAMP)
	$(VENV)/bin/infersight run --config config.example.toml

test: $(TSTAMP) system-deps
	$(PY) -m pytest -q -rs tests

test-fast: $(TSTAMP)
	$(PY) -m pytest -q -x -m "not gpu and not browser and not slow" tests

bench: $(STAMP)
	$(PY) bench/run_all.py

# the README's screenshots (web/static/tour/), taken by the browser tests that walk the tour
tour: $(TSTAMP) system-deps
	INFERSIGHT_TOUR=web/static/tour $(PY) -m pytest -q tests/test_ui_oncall.py

install: $(STAMP)
	$(VENV)/bin/infersight install-service

clean:
	rm -rf $(VENV) var build *.egg-info
