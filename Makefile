PY := .venv/bin/python
PIP := .venv/bin/pip

.PHONY: install test demo lint clean

install: .venv/.installed

# torch is pinned and installed first: a later range requirement is then already met,
# and pip never reaches for a multi-gigabyte CUDA build.
.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"
	touch $@

# the app's browser test drives Debian's chromium; installed where we may (root), else skipped
test: install
	-@[ -x /usr/bin/chromium ] || [ "$$(id -u)" != 0 ] || \
		(apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1
	$(PY) -m ruff check src tests
	$(PY) -m pytest

demo: install
	.venv/bin/segdino demo

lint: install
	$(PY) -m ruff check src tests

clean:
	rm -rf .venv build src/*.egg-info .pytest_cache
