#!/bin/sh
# Tools the fault tests (tests/e2e/test_multihost.py) need on a fresh Debian 12 machine: `ip` (network
# namespaces, veth, bridge), `iptables` (partitions inside a namespace) and `nsenter` (run an agent in a
# namespace's network without remounting /sys). All three are usually present; install what is missing.
set -eu
missing=""
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v iptables >/dev/null 2>&1 || missing="$missing iptables"
command -v nsenter >/dev/null 2>&1 || missing="$missing util-linux"
if [ -n "$missing" ]; then
    apt-get update
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi
ip -V
iptables --version
nsenter --version
