/**
 * The map service as a process of its own, for tests that kill -9 and
 * restart it (test/helpers/fault-cluster.ts runs it from dist/). It serves an
 * existing embedded map directory: `node map-daemon-main.js DIR HOST PORT [LIVENESS_JSON]`
 * (LIVENESS_JSON: the map daemon's failure detection options, cluster/liveness.ts).
 * Prints {"event":"listening","port":N} once it listens; SIGTERM closes it.
 */
import { systemIo } from '../../src/io/system.js';
import { startMapDaemon } from '../../cluster/map-daemon.js';
import type { LivenessOptions } from '../../cluster/liveness.js';

const [dir, host, port, livenessJson] = process.argv.slice(2);
if (!dir || !host || port === undefined) {
  process.stderr.write('usage: map-daemon-main DIR HOST PORT [LIVENESS_JSON]\n');
  process.exit(2);
}
const liveness = livenessJson ? (JSON.parse(livenessJson) as LivenessOptions) : undefined;
const mapd = await startMapDaemon({ io: systemIo(), dir, host, port: Number(port), ...(liveness ? { liveness } : {}) });
process.stdout.write(`${JSON.stringify({ event: 'listening', port: mapd.port, pid: process.pid })}\n`);
await new Promise<void>((resolve) => {
  process.once('SIGTERM', resolve);
  process.once('SIGINT', resolve);
});
await mapd.close();
