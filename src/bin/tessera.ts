#!/usr/bin/env node
/**
 * The `tessera` command. This file only sizes libuv's thread pool before
 * anything can start it (RocksDB and file I/O share that pool; the default 4
 * threads is too few for a daemon doing group commits, reads and compaction at
 * once), makes a child of `tessera up` stop when up is gone, then loads the
 * real entry point.
 */
process.env.UV_THREADPOOL_SIZE ??= '8';
// A child of `tessera up` (its stdin a pipe from up, and this variable set) stops as on SIGTERM when that pipe closes:
// up exited, also by kill -9 or a crash, and no daemon, map daemon or gateway outlives its supervisor.
const supervised = process.env.TESSERA_EXIT_WITH_PARENT === '1';
if (supervised) {
  delete process.env.TESSERA_EXIT_WITH_PARENT;
  process.stdin.on('data', () => undefined);
  process.stdin.once('close', () => process.kill(process.pid, 'SIGTERM'));
}
const { main } = await import('./main.js');
const { EXIT_STOP_TIMED_OUT } = await import('../cli/daemon.js');
process.exitCode = await main(process.argv.slice(2));
// A daemon whose stop timed out (src/cli/daemon.ts): whatever it waited on may still hold the event loop.
if (process.exitCode === EXIT_STOP_TIMED_OUT) process.exit(process.exitCode);
// The pipe would keep the process alive once the command is done (stopped by up's SIGTERM: up still holds it).
if (supervised) process.stdin.destroy();
