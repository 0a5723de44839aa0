# uvxlan: make demo | make test | make test-unit | make bench | make lint | make clean
# Every target that needs it runs scripts/setup.sh first (as root).
PY := .venv/bin/python

.PHONY: setup build demo test test-unit test-system test-quick lint bench bench-micro sanitize fuzz clean

setup:
	@scripts/setup.sh

build: setup

demo: setup
	$(PY) -m uvxlan demo

test: setup lint
	$(PY) -m pytest -ra tests

# No root needed, seconds: the codecs, FDB, offloads, reconcile logic, config.
test-unit:
	@scripts/setup.sh --unit
	$(PY) -m pytest -ra -n 2 tests/unit

# Root: namespaces, TAP, etcd, Linux's vxlan.
test-system: setup
	$(PY) -m pytest -ra tests/system

test-quick: setup
	$(PY) -m pytest -ra -x tests

lint: setup
	$(PY) -m ruff check uvxlan tests benchmarks csrc
	$(PY) -m mypy uvxlan

bench: setup
	$(PY) -m uvxlan bench

bench-micro: setup
	$(PY) -m pytest -q benchmarks/test_micro.py --benchmark-enable --benchmark-columns=median,ops

clean:
	rm -rf build uvxlan/_native*.so tests/support/_uvx_testing*.so .pytest_cache .mypy_cache .ruff_cache

# libFuzzer on the parsers (VXLAN, ARP, offloads) and FDB (installs clang's fuzzer runtime if missing).
fuzz:
	@command -v clang >/dev/null || (apt-get update -qq && apt-get install -y -qq clang libclang-rt-14-dev >/dev/null)
	mkdir -p build/fuzz
	clang -g -O1 -fsanitize=fuzzer,address,undefined -Icsrc csrc/fuzz/fuzz_vxlan.c csrc/vxlan.c csrc/fdb.c csrc/csum.c csrc/arp.c csrc/offload.c -o build/fuzz/fuzz_vxlan
	build/fuzz/fuzz_vxlan -max_total_time=$${FUZZ_SECONDS:-60} -max_len=2048

# The C switch (and the test hooks' codec and offloads) under ASan/UBSan,
# driven by the switch, FDB, codec and offload tests.
sanitize: setup
	UVX_SANITIZE=1 $(PY) setup.py -q build_ext --inplace --force
	UVX_SANITIZE=1 $(PY) csrc/testing/build_testing.py >/dev/null
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so):$$(gcc -print-file-name=libubsan.so) \
	  ASAN_OPTIONS=detect_leaks=0 $(PY) -m pytest -q -p no:cacheprovider \
	  tests/system/test_switch.py tests/system/test_arp.py tests/unit/test_fdb.py \
	  tests/unit/test_wire.py tests/unit/test_offload.py; \
	status=$$?; $(PY) setup.py -q build_ext --inplace --force; \
	$(PY) csrc/testing/build_testing.py >/dev/null; exit $$status
