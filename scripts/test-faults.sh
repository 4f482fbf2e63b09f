#!/usr/bin/env bash
# The fault-injection suite on demand (docs/testing.md):
#   npm run test:faults -- [--faults N] [--seed S] [--ec|--no-ec] [--kinds kill9,pause,...] [--loopback]
# builds, then runs test/faults.test.ts with the matching TESSERA_* variables.
set -euo pipefail
cd "$(dirname "$0")/.."
while [ $# -gt 0 ]; do
  case "$1" in
    --faults) export TESSERA_FAULTS="$2"; shift 2 ;;
    --seed) export TESSERA_SEED="$2"; shift 2 ;;
    --no-ec) export TESSERA_FAULTS_EC=0; shift ;;
    --ec) export TESSERA_FAULTS_EC=1; shift ;; # the default
    --kinds) export TESSERA_FAULTS_KINDS="$2"; shift 2 ;;
    --loopback) export TESSERA_FAULTS_NETNS=0; shift ;;
    --no-audit) export TESSERA_FAULTS_AUDIT=0; shift ;;
    *) echo "test:faults: unknown option $1 (--faults N, --seed S, --no-ec, --kinds K1,K2, --loopback, --no-audit)" >&2; exit 2 ;;
  esac
done
npm run build >/dev/null
exec npx vitest run test/faults.test.ts
