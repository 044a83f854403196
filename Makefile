# Quick start: `make demo`, then `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DEMO := demo-out

.PHONY: demo test install bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test,train,ray,av]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/melset extract --tracks sample/fma_metadata/tracks.csv --audio sample/fma_audio --out $(DEMO)/store --subset large --overwrite
	$(VENV)/bin/melset info $(DEMO)/store
	$(VENV)/bin/melset show $(DEMO)/store --track 200010 --png $(DEMO)/200010.png
	$(VENV)/bin/melset export $(DEMO)/store --format seed-pickles --to $(DEMO)/notebook

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/extract_speed.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
