#!/usr/bin/env bash
# Make this machine ready to build, demo and test uvxlan: Debian packages
# (only those missing), a virtualenv in .venv with the Python packages, and
# the compiled fast path.  Safe to run again; does nothing already done.
#
#   scripts/setup.sh           everything: the demo, the whole suite, the bench
#   scripts/setup.sh --unit    only what tests/unit needs (gcc, the venv, the
#                              build): no root needed once gcc is there
#   scripts/setup.sh --docker  everything, and Docker for `uvxlan demo --docker`
#                              and the tests that run real dockerds (make test)
set -euo pipefail
cd "$(dirname "$0")/.."

# ping (iputils-ping), ip (iproute2), iperf3, tshark, tcpdump, ethtool:
# the demo, tests and benchmarks use them; gcc and Python headers build the
# C fast path.
# etcd-server: tests/system/test_store.py runs a real etcd.
# openvswitch-switch: tests/system/test_ovs.py runs OVS's userspace datapath
# (private daemons per lab host; the system's service is not used).
# openssl: tests/system/test_store_tls.py makes its CA and certificates.
# clang, libclang-rt-14-dev: libFuzzer and its sanitizers (make fuzz,
# tests/system/test_fuzz.py).
# faketime: tests/system/test_identity.py steps a store user's wall clock.
# iptables: tests/system/test_gbp_interop.py marks a Linux vxlan host's
# traffic with its VXLAN-GBP group.
DEBS="iproute2 iputils-ping iperf3 iptables tshark tcpdump ethtool procps etcd-server openvswitch-switch openssl gcc libc6-dev clang libclang-rt-14-dev faketime systemd"
# podman (its CNI backend), runc, containernetworking-plugins, busybox-static:
# tests/system/test_cni.py runs podman containers on uvxlan-cni.
DEBS="$DEBS podman containernetworking-plugins runc busybox-static"
# docker.io (dockerd, the docker CLI, containerd, runc), busybox-static:
# each lab host runs a private dockerd; the image is busybox, imported
# without a registry (uvxlan/lab/dockerd.py).  A Docker installed another
# way (docker-ce, which conflicts with docker.io) is used as it is.
DOCKER_DEBS="busybox-static"
if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
	DOCKER_DEBS="docker.io containerd $DOCKER_DEBS"
fi
case "${1:-}" in
--unit) DEBS="gcc libc6-dev" ;;
--docker) DEBS="$DEBS $DOCKER_DEBS" ;;
"") ;;
*) echo "usage: scripts/setup.sh [--unit | --docker]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
if ! "$PY" -c 'import venv, ensurepip' >/dev/null 2>&1; then
	DEBS="$DEBS python3-venv python3-dev"
fi
missing=""
for p in $DEBS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	# Root only for this step: a user with everything installed (say, for
	# make test-unit) gets the venv and the build without it.
	if [ "$(id -u)" -ne 0 ]; then
		echo "setup: needs root to install Debian packages:$missing" >&2
		exit 1
	fi
	echo "setup: installing Debian packages:$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
	# The tests start OVS daemons of their own; a system service that the
	# package started is not wanted.
	if [ -d /run/systemd/system ] && systemctl is-active -q openvswitch-switch 2>/dev/null; then
		systemctl disable -q --now openvswitch-switch || true
	fi
	# Likewise the lab runs a dockerd per lab host; a system dockerd that
	# was just installed (its bridge, its iptables rules) is not wanted.
	# One that was there before stays as it was.
	case " $missing " in
	*" docker.io "*)
		if [ -d /run/systemd/system ]; then
			systemctl disable -q --now docker.socket docker.service containerd.service 2>/dev/null || true
		fi ;;
	esac
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
.venv/bin/python csrc/testing/build_testing.py >/dev/null   # test hooks: tests/support/_uvx_testing
.venv/bin/python -c 'import uvxlan.native'

# The commands the documentation uses, uvxlan and uvxlan-cni: launchers in
# .venv/bin that run this checkout with the venv's Python (-P: never a
# module from the caller's working directory), and for root links in
# /usr/local/bin (where the systemd unit looks).  Only a checkout no other
# user can change is linked for root (cni.unsafe_for_root, as
# `uvxlan-cni install` checks), and only a missing command or a link to
# another launcher of ours is replaced.
here=$(pwd -P)
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$here" > "$site/uvxlan-checkout.pth"
quoted=$(.venv/bin/python -P -c 'import shlex, sys; print(shlex.quote(sys.argv[1]))' "$here/.venv/bin/python")
marker="written by scripts/setup.sh"
unsafe=""
if [ "$(id -u)" -eq 0 ]; then
	unsafe=$(.venv/bin/python -P -c 'import sys; from pathlib import Path
from uvxlan.cni import unsafe_for_root
print(unsafe_for_root([Path(p) for p in sys.argv[1:]]) or "")' "$here/uvxlan" "$here/.venv/bin" "$here/.venv/bin/python") ||
		unsafe="could not be checked"
	[ -z "$unsafe" ] || echo "setup: not linking uvxlan into /usr/local/bin: root would run this checkout, and $unsafe" >&2
fi
for spec in uvxlan:uvxlan uvxlan-cni:uvxlan.cni; do
	name=${spec%%:*}
	printf '#!/bin/sh\n# %s: %s\nexec %s -P -m %s "$@"\n' \
		"$name" "$marker" "$quoted" "${spec#*:}" > ".venv/bin/.$name.tmp"
	chmod 0755 ".venv/bin/.$name.tmp"
	mv -f ".venv/bin/.$name.tmp" ".venv/bin/$name"
	link=/usr/local/bin/$name
	if [ "$(id -u)" -eq 0 ] && [ -z "$unsafe" ] && [ -d /usr/local/bin ]; then
		if [ ! -e "$link" ] && [ ! -L "$link" ]; then
			ln -s "$here/.venv/bin/$name" "$link"
		elif [ -L "$link" ] && { grep -qs "$marker" "$link" || { [ ! -e "$link" ] &&
			case "$(readlink "$link")" in */.venv/bin/"$name") true ;; *) false ;; esac; }; }; then
			ln -sfn "$here/.venv/bin/$name" "$link"     # ours, or ours from a removed checkout
		fi
	fi
done
