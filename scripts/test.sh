#!/usr/bin/env bash
# The README's test command runs this (npm test): it installs the system
# packages the tests need when they are missing and it can (root + apt),
# builds, and runs every test. A test whose system package could not be
# installed skips itself and says why, loudly.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh || echo "WARNING: installing system packages failed; tests that need them will say so" >&2
[ native/build/Release/tessera_native.node -nt native/src/tessera_native.c ] || npm run build:native || echo "WARNING: building the ISA-L addon failed; native tests will say so" >&2
npm run build
exec npx vitest run "$@"
