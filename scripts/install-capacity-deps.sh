#!/usr/bin/env bash
# Installs what the capacity controller and its tests need on a fresh Debian 12 machine:
# boto3 (AWS adapter), moto[server] (the AWS emulator the tests start on 127.0.0.1), kazoo (leader
# election) and a ZooKeeper server + JRE for the leader-election test.
set -euo pipefail

if ! dpkg -s zookeeper >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends zookeeper default-jre-headless
fi
# The Debian package enables a system ZooKeeper service on 0.0.0.0:2181; the tests start their own on
# 127.0.0.1 and a free port, so keep the packaged service off.
if command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now zookeeper >/dev/null 2>&1 || true
fi

python -m pip install --quiet "boto3>=1.34" "moto[server]>=5.0" "kazoo>=2.10" "flask>=3.0" "click>=8.1" "requests>=2.31"
