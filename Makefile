# uvxlan: make demo | make demo-docker | make test | make test-unit | make bench | make lint | make clean
# Every target that needs it runs scripts/setup.sh first (as root).
PY := .venv/bin/python

.PHONY: setup build demo demo-docker test test-unit test-system test-quick lint bench bench-micro sanitize tsan \
	fuzz fuzz-build fuzz-vxlan fuzz-rcv fuzz-xmit fuzz-fault clean

# make test, test-system, test-quick and demo-docker set up Docker as well
# (their prerequisite `setup` sees the variable)
setup:
	@scripts/setup.sh $(SETUP_FLAGS)

test test-system test-quick demo-docker: SETUP_FLAGS := --docker

build: setup

demo: setup
	$(PY) -m uvxlan demo

# The demo with real Docker: a dockerd per lab host, docker network create -d uvxlan
demo-docker: setup
	$(PY) -m uvxlan demo --docker

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

# The datapath under ThreadSanitizer (gcc's runtime, preloaded into an
# uninstrumented CPython), driven by the switch tests and by the two worker
# threads moving traffic while Python changes everything
# (tests/system/test_dp_threads.py).  Reports go to build/tsan/report.*; any
# report fails the target.
tsan: setup
	UVX_SANITIZE=thread $(PY) setup.py -q build_ext --inplace --force
	UVX_SANITIZE=thread $(PY) csrc/testing/build_testing.py >/dev/null
	rm -rf build/tsan; mkdir -p build/tsan
	LD_PRELOAD=$$(gcc -print-file-name=libtsan.so) \
	  TSAN_OPTIONS="exitcode=66 log_path=$(CURDIR)/build/tsan/report" \
	  $(PY) -m pytest -q -p no:cacheprovider tests/system/test_switch.py tests/system/test_dp_threads.py; \
	status=$$?; cat build/tsan/report.* 2>/dev/null && status=66; \
	$(PY) setup.py -q build_ext --inplace --force; \
	$(PY) csrc/testing/build_testing.py >/dev/null; exit $$status

# libFuzzer (clang, ASan + UBSan) on four targets, each its own binary in
# build/fuzz: the parsers and FDB (fuzz_vxlan), the whole receive path
# (fuzz_rcv) and the transmit path with segmentation (fuzz_xmit) on a real
# datapath, fault injection's corruption parser and rules (fuzz_fault).  Each runs FUZZ_RUNS executions, else FUZZ_SECONDS (60); a
# finding stops it and leaves crash-* here.  Root: the transmit target's
# raw socket.  Inputs found go to build/fuzz/corpus-*, seeds are written by
# csrc/fuzz/seeds.py, past findings are in csrc/fuzz/regress-*.
FUZZ_CFLAGS := -std=gnu11 -D_GNU_SOURCE -g -O1 -Wall -Wextra -Wno-unused-parameter \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Icsrc
FUZZ_LIMIT = $(if $(FUZZ_RUNS),-runs=$(FUZZ_RUNS),-max_total_time=$(or $(FUZZ_SECONDS),60))
FUZZ_DP := csrc/fuzz/fuzz_dp.c $(wildcard csrc/*.c)

fuzz: fuzz-vxlan fuzz-rcv fuzz-xmit fuzz-fault

fuzz-build: setup
	mkdir -p build/fuzz
	clang $(FUZZ_CFLAGS) csrc/fuzz/fuzz_vxlan.c csrc/vxlan.c csrc/fdb.c csrc/csum.c csrc/arp.c csrc/offload.c csrc/capring.c -o build/fuzz/fuzz_vxlan
	clang $(FUZZ_CFLAGS) csrc/fuzz/fuzz_fault.c csrc/fault.c -o build/fuzz/fuzz_fault
	clang $(FUZZ_CFLAGS) csrc/fuzz/fuzz_rcv.c $(FUZZ_DP) -lpthread -o build/fuzz/fuzz_rcv
	clang $(FUZZ_CFLAGS) csrc/fuzz/fuzz_xmit.c $(FUZZ_DP) -lpthread -o build/fuzz/fuzz_xmit
	for t in rcv xmit; do python3 csrc/fuzz/seeds.py $$t build/fuzz/seeds-$$t; mkdir -p build/fuzz/corpus-$$t; done

fuzz-vxlan: fuzz-build
	build/fuzz/fuzz_vxlan $(FUZZ_LIMIT) -max_len=2048

fuzz-fault: fuzz-build
	build/fuzz/fuzz_fault $(FUZZ_LIMIT) -max_len=1464

fuzz-rcv fuzz-xmit: fuzz-%: fuzz-build
	build/fuzz/fuzz_$* $(FUZZ_LIMIT) -max_len=65600 -print_final_stats=1 \
	  build/fuzz/corpus-$* build/fuzz/seeds-$* $(wildcard csrc/fuzz/regress-$*)

# The C switch (and the test hooks' codec and offloads) under ASan/UBSan,
# driven by the switch, FDB, codec, offload and capture ring tests.
sanitize: setup
	UVX_SANITIZE=1 $(PY) setup.py -q build_ext --inplace --force
	UVX_SANITIZE=1 $(PY) csrc/testing/build_testing.py >/dev/null
	LD_PRELOAD=$$(gcc -print-file-name=libasan.so):$$(gcc -print-file-name=libubsan.so) \
	  ASAN_OPTIONS=detect_leaks=0 $(PY) -m pytest -q -p no:cacheprovider \
	  tests/system/test_switch.py tests/system/test_arp.py tests/system/test_punt.py \
	  tests/unit/test_fdb.py tests/unit/test_wire.py tests/unit/test_offload.py \
	  tests/unit/test_capture.py; \
	status=$$?; $(PY) setup.py -q build_ext --inplace --force; \
	$(PY) csrc/testing/build_testing.py >/dev/null; exit $$status
