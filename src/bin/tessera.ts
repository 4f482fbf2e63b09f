#!/usr/bin/env node
/**
 * The `tessera` command. This file only sizes libuv's thread pool before
 * anything can start it (RocksDB and file I/O share that pool; the default 4
 * threads is too few for a daemon doing group commits, reads and compaction at
 * once), then loads the real entry point.
 */
process.env.UV_THREADPOOL_SIZE ??= '8';
const { main } = await import('./main.js');
process.exitCode = await main(process.argv.slice(2));
