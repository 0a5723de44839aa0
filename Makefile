# uvxlan: make demo | make test | make bench | make lint | make clean
# Every target that needs it runs scripts/setup.sh first (as root).
PY := .venv/bin/python

.PHONY: setup build demo test test-quick lint bench sanitize clean

setup:
	@scripts/setup.sh

build: setup

demo: setup
	$(PY) -m uvxlan demo

test: setup lint
	$(PY) -m pytest -ra tests

test-quick: setup
	$(PY) -m pytest -ra -x tests

lint: setup
	$(PY) -m ruff check uvxlan tests benchmarks csrc/build_ffi.py
	$(PY) -m mypy uvxlan

bench: setup
	$(PY) -m uvxlan bench

clean:
	rm -rf build uvxlan/_native*.so .pytest_cache .mypy_cache .ruff_cache
