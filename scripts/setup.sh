#!/usr/bin/env bash
# Make this machine ready to build, demo and test uvxlan: Debian packages
# (only those missing), a virtualenv in .venv with the Python packages, and
# the compiled fast path.  Safe to run again; does nothing already done.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "setup: needs root (namespaces, TAP devices, apt-get)" >&2
	exit 1
fi

# ping (iputils-ping), ip (iproute2), iperf3, tshark, tcpdump, ethtool:
# the demo, tests and benchmarks use them; gcc and Python headers build the
# C fast path.
# etcd-server: tests/test_store.py runs a real etcd.
DEBS="iproute2 iputils-ping iperf3 tshark tcpdump ethtool procps etcd-server gcc libc6-dev"
PY=${PYTHON:-python3}
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
	DEBS="$DEBS python3-venv python3-dev"
fi
missing=""
for p in $DEBS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "setup: installing Debian packages:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

stamp=.venv/.requirements
if [ ! -x .venv/bin/python ] || ! cmp -s requirements.txt "$stamp"; then
	echo "setup: creating .venv with requirements.txt"
	[ -x .venv/bin/python ] || "$PY" -m venv .venv
	.venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
	cp requirements.txt "$stamp"
fi

# Build the fast path (cffi, out-of-line API mode) into uvxlan/.
.venv/bin/python setup.py -q build_ext --inplace >/dev/null
.venv/bin/python -c 'import uvxlan.native'
