/**
 * The map service as a process of its own, for tests that kill -9 and
 * restart it (test/helpers/fault-cluster.ts runs it from dist/). It serves an
 * existing embedded map directory: `node map-daemon-main.js DIR HOST PORT`.
 * Prints {"event":"listening","port":N} once it listens; SIGTERM closes it.
 */
import { systemIo } from '../../src/io/system.js';
import { startMapDaemon } from '../../cluster/map-daemon.js';

const [dir, host, port] = process.argv.slice(2);
if (!dir || !host || port === undefined) {
  process.stderr.write('usage: map-daemon-main DIR HOST PORT\n');
  process.exit(2);
}
const mapd = await startMapDaemon({ io: systemIo(), dir, host, port: Number(port) });
process.stdout.write(`${JSON.stringify({ event: 'listening', port: mapd.port, pid: process.pid })}\n`);
await new Promise<void>((resolve) => {
  process.once('SIGTERM', resolve);
  process.once('SIGINT', resolve);
});
await mapd.close();
