# Two commands do everything on a fresh Debian machine with Python 3.11:
#   make demo   set up .venv, make sure Fashion-MNIST is present, run `lowbit demo`
#   make test   the same set-up, then the whole test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.lowbit-installed
SOURCES := pyproject.toml CMakeLists.txt $(shell find csrc -type f 2>/dev/null)

.PHONY: demo test setup data simde clean

demo: setup data
	$(VENV)/bin/lowbit demo

test: setup data simde
	$(VENV)/bin/python -m pytest -q

setup: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch==2.13.0 (CPU) first: a bare `torch` requirement would pull a multi-GB CUDA build.
$(STAMP): $(PY) $(SOURCES)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q "scikit-build-core>=0.10" "nanobind>=2.0" cmake ninja
	$(PIP) install -q --no-build-isolation -e '.[all]'
	touch $@

data:
	@scripts/ensure-data.sh

simde:
	@scripts/ensure-simde.sh

clean:
	rm -rf build $(VENV) runs
