# Two commands on a fresh machine: `make run` (app on the bundled demo data) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test lint bench clean browser screenshots

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first: the pinned CPU wheel, so sentence-transformers does not pull a CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test,export,ray]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/reranker-studio app

# The browser tests drive Debian's Chromium through Playwright (it cannot download a browser).
browser:
	@command -v chromium >/dev/null || { \
	  echo "installing Debian's chromium for the browser tests"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

# The README's walkthrough images: the browser journey test takes them; this copies them over.
screenshots: $(STAMP) browser
	$(PY) -m pytest -q tests/browser/test_journey.py
	# 4-train and 5-evaluate show a real model's run: docs/real_screenshots.py takes those
	mkdir -p docs/screenshots && for f in tests/artifacts/journey/*.png; do \
	  case $$f in *4-train*|*5-evaluate*) ;; *) cp $$f docs/screenshots/;; esac; done

bench: $(STAMP)
	$(PY) bench/ingest.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
