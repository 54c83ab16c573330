# Two commands do all the set-up on a fresh machine (see README.md):
#   make demo   simulate -> train -> process -> report, in demo_output/
#   make test   the test suite
# and one more for the newest ctapipe (it needs Python 3.12, see README.md):
#   make test-latest   the test suite with the newest ctapipe, in .venv-latest/
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Python 3.12 for the newest ctapipe (0.29+ need it): python3.12 on PATH, else pyenv's
PYTHON_LATEST ?= $(firstword $(foreach p,python3.12 $(wildcard $(or $(PYENV_ROOT),$(HOME)/.pyenv)/versions/3.12*/bin/python),$(if $(shell $(p) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null && echo ok),$(p))))
VENV_LATEST := .venv-latest
STAMP_LATEST := $(VENV_LATEST)/.installed

.PHONY: install install-latest demo test test-latest benchmarks docs clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# the CPU wheel of torch first, so that no CUDA build is pulled in
	$(BIN)/python -m pip install --quiet -c constraints.txt torch
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[tests,docs,onnx,irf]"
	touch $(STAMP)

install: $(STAMP)

# On Python 3.12 torch comes from the registry (the CUDA build; it runs on the CPU as well).
$(STAMP_LATEST): setup.cfg pyproject.toml constraints-latest.txt
	@test -x $(VENV_LATEST)/bin/python || test -n "$(PYTHON_LATEST)" || { \
	    echo "make test-latest needs Python 3.12: none found (python3.12 on PATH, pyenv's versions/3.12*);" \
	         "install one or give it as PYTHON_LATEST=/path/to/python3.12" >&2; exit 1; }
	test -x $(VENV_LATEST)/bin/python || $(PYTHON_LATEST) -m venv $(VENV_LATEST)
	$(VENV_LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_LATEST)/bin/python -m pip install --quiet -c constraints-latest.txt -e ".[tests,onnx,irf]"
	touch $(STAMP_LATEST)

install-latest: $(STAMP_LATEST)

demo: $(STAMP)
	$(BIN)/python -m ctapipe_gammaphysnet.demo --output-dir demo_output

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

test-latest: $(STAMP_LATEST)
	$(VENV_LATEST)/bin/python -m pytest -n 2 --dist loadfile tests

benchmarks: $(STAMP)
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

docs: $(STAMP)
	$(BIN)/sphinx-build -W -b html docs docs/_build/html

clean:
	rm -rf $(VENV) $(VENV_LATEST) demo_output benchmark_output docs/_build
