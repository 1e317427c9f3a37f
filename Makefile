# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv and installs graphrnn into it first.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test graphviz bench bench-results gallery docs

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Graphviz's `dot` draws the diagrams; .dot output works without it.
graphviz:
	@command -v dot >/dev/null 2>&1 || \
	  { (apt-get install -y -qq graphviz >/dev/null 2>&1 || \
	     (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq graphviz >/dev/null 2>&1) || \
	     sudo -n apt-get install -y -qq graphviz >/dev/null 2>&1) || \
	    echo "note: could not install Graphviz (apt-get install graphviz); only .dot diagrams will render"; }

demo: $(VENV)/.installed graphviz
	$(VENV)/bin/graphrnn demo

# The tests also run the sweeps on Ray (the optional `sweep` extra), so that
# killing a worker and resuming a sweep are checked on every change.
$(VENV)/.installed-sweep: $(VENV)/.installed
	$(PY) -m pip install -q -e '.[dev,sweep]'
	touch $@

test: $(VENV)/.installed-sweep graphviz
	$(PY) -m pytest -q

# A fresh measurement goes to runs/bench; only bench-results rewrites the
# committed tables in benchmarks/results (which the README quotes).
bench: $(VENV)/.installed
	$(VENV)/bin/graphrnn bench --out runs/bench

bench-results: $(VENV)/.installed
	$(VENV)/bin/graphrnn bench --out benchmarks/results
	$(VENV)/bin/graphrnn bench --lm --out benchmarks/results
	$(PY) benchmarks/readme.py

gallery: $(VENV)/.installed graphviz
	$(PY) -c "import sys; from graphrnn.render import main; sys.exit(main(['--gallery', 'docs/gallery']))"

# The API reference from the docstrings (pdoc, in the dev extra), into docs/api (not committed).
docs: $(VENV)/.installed
	$(PY) docs/make_api.py docs/api
