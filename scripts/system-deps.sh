#!/usr/bin/env bash
# Installs the Debian packages Tessera's tests and fast paths use, when they
# are missing and this is root on a Debian-like system. Never fails the caller
# for a package it cannot install: the tests that need it skip loudly instead.
set -uo pipefail
# awscli, rclone, s3cmd: real S3 clients for the gateway's tests (test/s3-clients, test/cli-up).
# iptables: partitions between two test hosts (network namespaces; test/helpers/netns.ts).
packages=(libisal-dev etcd-server awscli rclone s3cmd iptables)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "system-deps: missing ${missing[*]}; not root or no apt-get, so not installing them" >&2
  exit 0
fi
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  apt-get update -qq >/dev/null 2>&1 || true
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    echo "system-deps: could not install ${missing[*]}" >&2
    exit 0
  }
fi
