#!/usr/bin/env bash
# Builds the ISA-L addon (native/build/Release/tessera_native.node) with
# node-gyp when ISA-L's headers and library are present (Debian: libisal-dev).
# Without them it says so and exits 0: native/index.ts then uses the portable
# WebAssembly codec and @node-rs/crc32, which write the same bytes, slower.
# With them, a failed compile is a real error and fails the build.
set -euo pipefail
cd "$(dirname "$0")"

probe='#include <isa-l/erasure_code.h>
#include <isa-l/crc.h>
int main(void) { ec_init_tables(0, 0, 0, 0); return (int)crc32_iscsi(0, 0, 0); }'
if ! printf '%s\n' "$probe" | ${CC:-cc} -x c - -lisal -o /dev/null >/dev/null 2>&1; then
  echo "tessera: ISA-L not found (install libisal-dev, e.g. 'apt-get install libisal-dev', then run 'npm run build:native');" \
       "skipping the native addon: erasure coding and crc32c will use the portable fallback." >&2
  exit 0
fi

# npm puts its bundled node-gyp on PATH for scripts and names it in npm_config_node_gyp.
if [ -n "${npm_config_node_gyp:-}" ] && [ -f "$npm_config_node_gyp" ]; then
  gyp=(node "$npm_config_node_gyp")
elif command -v node-gyp >/dev/null 2>&1; then
  gyp=(node-gyp)
else
  npm_root="$(dirname "$(dirname "$(readlink -f "$(command -v npm)")")")"
  gyp=(node "$npm_root/node_modules/node-gyp/bin/node-gyp.js")
fi
# Build against the headers of the node that runs us when they sit beside it
# (Debian's nodejs, or npm's nodedir setting): node-gyp then downloads nothing.
nodedir="${npm_config_nodedir:-}"
if [ -z "$nodedir" ]; then
  prefix="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
  [ -f "$prefix/include/node/node_api.h" ] && nodedir="$prefix"
fi
echo "tessera: building the ISA-L addon in native/build" >&2
"${gyp[@]}" rebuild ${nodedir:+--nodedir="$nodedir"}
