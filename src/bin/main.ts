/**
 * Wires the `tessera` command together: parses arguments, builds the real Io,
 * and hands typed options to the command in src/cli. The only place that
 * knows every layer.
 */
import { parseArgs } from 'node:util';
import { systemIo } from '../io/system.js';
import { isTesseraError } from '../lib/errors.js';
import { runDaemon } from '../cli/daemon.js';
import { initDisk } from '../cli/disk.js';
import { runUp } from '../cli/up.js';
import { runStatus } from '../cli/status.js';

const usage = `usage: tessera <command> [options]

commands:
  up      [--data DIR] [--hosts N] [--disks-per-host N] [--base-port PORT] [--map-port PORT] [--pgs N] [--etcd URL[,URL...]]
          run an all-in-one cluster on local directories (default ./tessera-data);
          with --etcd, the cluster map lives in etcd (give it on every run)
  status  [--data DIR]
          show what runs, where, and how full it is
  daemon  --disk DIR --listen HOST:PORT [--cluster-id ID --disk-id N] [--map HOST:PORT]
          serve one disk (initialized on first start when --cluster-id and --disk-id are given);
          with --map, as a member of the cluster whose map service listens there
  disk init --disk DIR --cluster-id ID --disk-id N
          initialize a disk directory
`;

function parseListen(value: string): { host: string; port: number } {
  const at = value.lastIndexOf(':');
  const port = Number(value.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--listen wants HOST:PORT, got ${value}`);
  return { host: value.slice(0, at), port };
}

function intOption(value: string | undefined, name: string, fallback?: number): number {
  if (value === undefined) {
    if (fallback === undefined) throw new Error(`--${name} is required`);
    return fallback;
  }
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`--${name} wants a non-negative integer, got ${value}`);
  return n;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const io = systemIo();
  try {
    switch (command) {
      case 'daemon': {
        const { values } = parseArgs({ args: rest, options: { disk: { type: 'string' }, listen: { type: 'string' }, 'cluster-id': { type: 'string' }, 'disk-id': { type: 'string' }, map: { type: 'string' } } });
        if (!values.disk || !values.listen) throw new Error('daemon needs --disk DIR and --listen HOST:PORT');
        const clusterId = values['cluster-id'];
        const diskId = values['disk-id'] === undefined ? undefined : intOption(values['disk-id'], 'disk-id');
        return await runDaemon({
          io,
          diskPath: values.disk,
          ...parseListen(values.listen),
          ...(clusterId !== undefined ? { clusterId } : {}),
          ...(diskId !== undefined ? { diskId } : {}),
          ...(values.map !== undefined ? { map: values.map } : {}),
        });
      }
      case 'disk': {
        const [sub, ...args] = rest;
        const { values } = parseArgs({ args, options: { disk: { type: 'string' }, 'cluster-id': { type: 'string' }, 'disk-id': { type: 'string' } } });
        if (sub !== 'init' || !values.disk || !values['cluster-id']) throw new Error('usage: tessera disk init --disk DIR --cluster-id ID --disk-id N');
        await initDisk({ io, diskPath: values.disk, clusterId: values['cluster-id'], diskId: intOption(values['disk-id'], 'disk-id') });
        return 0;
      }
      case 'up': {
        const { values } = parseArgs({
          args: rest,
          options: { data: { type: 'string' }, hosts: { type: 'string' }, 'disks-per-host': { type: 'string' }, 'base-port': { type: 'string' }, 'map-port': { type: 'string' }, pgs: { type: 'string' }, etcd: { type: 'string' } },
        });
        const etcd = values.etcd?.split(',').map((u) => u.trim()).filter((u) => u !== '');
        if (values.etcd !== undefined && etcd!.length === 0) throw new Error('--etcd wants URL[,URL...]');
        return await runUp({
          io,
          dataDir: values.data ?? 'tessera-data',
          hosts: intOption(values.hosts, 'hosts', 3),
          disksPerHost: intOption(values['disks-per-host'], 'disks-per-host', 2),
          basePort: intOption(values['base-port'], 'base-port', 6800),
          mapPort: intOption(values['map-port'], 'map-port', 6789),
          pgCount: intOption(values.pgs, "pgs", 64),
          ...(etcd ? { etcd } : {}),
        });
      }
      case 'status': {
        const { values } = parseArgs({ args: rest, options: { data: { type: 'string' } } });
        return await runStatus({ io, dataDir: values.data ?? 'tessera-data' });
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(usage);
        return command === undefined ? 2 : 0;
      default:
        process.stderr.write(`tessera: unknown command ${command}\n${usage}`);
        return 2;
    }
  } catch (err) {
    const message = isTesseraError(err) ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : String(err);
    process.stderr.write(`tessera ${command ?? ''}: ${message}\n`);
    return 1;
  }
}
