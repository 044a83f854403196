# Quick start: `make demo` (melset and its core dependencies, ~0.6 GB), then `make test` (adds the
# extras and the test tools, ~1.7 GB more). Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# `make demo` installs melset alone (what `pip install melset` gives: no torch, no Ray, no test
# tools); `make test` adds what the tests, training, Ray and the exports' readers need
TEST_EXTRAS := test,train,ray,av,hf,wds,fast,s3
CORE_STAMP := $(VENV)/.installed-core
FULL_STAMP := $(VENV)/.installed-full
DEMO := demo-out

.PHONY: demo test install install-core bench clean system-packages

$(CORE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e .
	@# an editable install leaves melset's own modules uncompiled, and where PYTHONDONTWRITEBYTECODE
	@# is set every process would compile them again (~0.1 s of each worker server's start)
	$(PY) -m compileall -q src
	touch $(CORE_STAMP)

# after the core: `make test` following `make demo` adds only the extras
$(FULL_STAMP): $(CORE_STAMP) pyproject.toml
	$(PIP) install --quiet -e '.[$(TEST_EXTRAS)]'
	touch $(FULL_STAMP)

install-core: $(CORE_STAMP)

install: $(FULL_STAMP)

demo: $(CORE_STAMP)
	$(VENV)/bin/melset extract --tracks sample/fma_metadata/tracks.csv --audio sample/fma_audio --out $(DEMO)/store --subset large --overwrite
	$(VENV)/bin/melset info $(DEMO)/store
	$(VENV)/bin/melset show $(DEMO)/store --track 200010 --png $(DEMO)/200010.png
	$(VENV)/bin/melset export $(DEMO)/store --format seed-pickles --to $(DEMO)/notebook
	$(VENV)/bin/melset report $(DEMO)/store --html $(DEMO)/report.html
	@echo
	@echo "melset is installed in $(VENV): run $(VENV)/bin/melset --help,"
	@echo "or first 'source $(VENV)/bin/activate', then melset --help"

# Debian's packages the tests use, where they can be installed (root): headless Chromium for the
# HTML report tests, libmpg123 for the mono mix of stereo MP3 (tests of either skip without it)
system-packages:
	@{ command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; } && \
		ldconfig -p 2>/dev/null | grep -q libmpg123.so.0 || \
		{ [ "$$(id -u)" = 0 ] && apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium libmpg123-0; } || \
		echo "chromium or libmpg123 not installed: the report-page and mono-mix tests will skip"

# two test processes, one file each at a time: the suite is mostly single-threaded waiting on
# whole `melset` commands, and the durability tests are built to pass on a busy machine
# mutations.py --check first (seconds, no tests): a planted bug whose text moved away fails the run
test: $(FULL_STAMP) system-packages
	$(PY) tests/mutations.py --check
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: $(FULL_STAMP)
	$(PY) benchmarks/extract_speed.py

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache
