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
import { runS3 } from '../cli/s3.js';
import { runUser, userCreate, userKeyAdd, userKeyRemove, userList, userRemove, type ClusterTarget } from '../cli/user.js';

const usage = `usage: tessera <command> [options]

commands:
  up      [--data DIR] [--hosts N] [--disks-per-host N] [--base-port PORT] [--map-port PORT] [--s3-port PORT] [--pgs N] [--etcd URL[,URL...]]
          run an all-in-one cluster on local directories (default ./tessera-data) with an
          S3 endpoint on 127.0.0.1 (default port 9000) and an admin user (keys in DIR/client.json);
          with --etcd, the cluster map lives in etcd (give it on every run)
  status  [--data DIR]
          show what runs, where, and how full it is
  daemon  --disk DIR --listen HOST:PORT [--cluster-id ID --disk-id N] [--map HOST:PORT] [--capacity-bytes N]
          serve one disk (initialized on first start when --cluster-id and --disk-id are given);
          with --map, as a member of the cluster whose map service listens there;
          --capacity-bytes caps the store (full ratios apply to it; default: the file system)
  disk init --disk DIR --cluster-id ID --disk-id N
          initialize a disk directory
  s3      --map HOST:PORT --listen HOST:PORT [--meta-pool POOL] [--data-pool POOL] [--region R]
          serve S3 for the cluster whose map service listens at --map (pools default to rep)
  user create --name NAME [--email E] [--access-key AK --secret-key SK|-]
  user ls
  user rm USER
  user key add USER [--access-key AK --secret-key SK|-]
  user key rm ACCESS_KEY
          S3 users and access keys of the cluster named by --data DIR (default ./tessera-data)
          or --map HOST:PORT; USER is a user id or a unique name; keys are generated unless
          given (--secret-key - reads the secret from standard input); a secret is shown only
          when it is created
`;

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8').trim();
}

/** --access-key and --secret-key: both or neither. */
async function givenKey(values: { 'access-key'?: string | undefined; 'secret-key'?: string | undefined }): Promise<{ accessKeyId: string; secretAccessKey: string } | undefined> {
  const accessKeyId = values['access-key'];
  const secret = values['secret-key'];
  if (accessKeyId === undefined && secret === undefined) return undefined;
  if (accessKeyId === undefined || secret === undefined) throw new Error('give both --access-key and --secret-key, or neither (to generate them)');
  return { accessKeyId, secretAccessKey: secret === '-' ? await readStdin() : secret };
}

const userOptions = {
  data: { type: 'string' },
  map: { type: 'string' },
  'meta-pool': { type: 'string' },
  name: { type: 'string' },
  email: { type: 'string' },
  'access-key': { type: 'string' },
  'secret-key': { type: 'string' },
} as const;

async function userCommand(io: ReturnType<typeof systemIo>, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: userOptions, allowPositionals: true });
  const target: ClusterTarget = {
    io,
    ...(values.data !== undefined ? { dataDir: values.data } : {}),
    ...(values.map !== undefined ? { map: values.map } : {}),
    ...(values['meta-pool'] !== undefined ? { metaPool: values['meta-pool'] } : {}),
  };
  const out = (text: string): void => void process.stdout.write(text);
  const [sub, ...rest] = positionals;
  const one = (what: string): string => {
    if (rest.length !== (sub === 'key' ? 2 : 1)) throw new Error(`usage: tessera user ${sub === 'key' ? `key ${rest[0] ?? 'add|rm'} ` : `${sub} `}${what}`);
    return rest[rest.length - 1]!;
  };
  switch (sub) {
    case 'create': {
      if (!values.name || rest.length > 0) throw new Error('usage: tessera user create --name NAME [--email E] [--access-key AK --secret-key SK|-]');
      const key = await givenKey(values);
      return runUser(target, (s) => userCreate(s, { name: values.name!, ...(values.email !== undefined ? { email: values.email } : {}), ...(key ? { key } : {}) }, out));
    }
    case 'ls':
      return runUser(target, (s) => userList(s, out));
    case 'rm': {
      const user = one('USER');
      return runUser(target, (s) => userRemove(s, user, out));
    }
    case 'key': {
      if (rest[0] === 'add') {
        const user = one('USER [--access-key AK --secret-key SK|-]');
        const key = await givenKey(values);
        return runUser(target, (s) => userKeyAdd(s, user, key, out));
      }
      if (rest[0] === 'rm') {
        const accessKeyId = one('ACCESS_KEY');
        return runUser(target, (s) => userKeyRemove(s, accessKeyId, out));
      }
      throw new Error('usage: tessera user key add USER | tessera user key rm ACCESS_KEY');
    }
    default:
      throw new Error('usage: tessera user create|ls|rm|key add|key rm (see tessera help)');
  }
}

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
        const { values } = parseArgs({ args: rest, options: { disk: { type: 'string' }, listen: { type: 'string' }, 'cluster-id': { type: 'string' }, 'disk-id': { type: 'string' }, map: { type: 'string' }, 'capacity-bytes': { type: 'string' } } });
        if (!values.disk || !values.listen) throw new Error('daemon needs --disk DIR and --listen HOST:PORT');
        const capacityBytes = values['capacity-bytes'] === undefined ? undefined : intOption(values['capacity-bytes'], 'capacity-bytes');
        const clusterId = values['cluster-id'];
        const diskId = values['disk-id'] === undefined ? undefined : intOption(values['disk-id'], 'disk-id');
        return await runDaemon({
          io,
          diskPath: values.disk,
          ...parseListen(values.listen),
          ...(clusterId !== undefined ? { clusterId } : {}),
          ...(diskId !== undefined ? { diskId } : {}),
          ...(values.map !== undefined ? { map: values.map } : {}),
          ...(capacityBytes !== undefined ? { capacityBytes } : {}),
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
          options: { data: { type: 'string' }, hosts: { type: 'string' }, 'disks-per-host': { type: 'string' }, 'base-port': { type: 'string' }, 'map-port': { type: 'string' }, 's3-port': { type: 'string' }, pgs: { type: 'string' }, etcd: { type: 'string' } },
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
          ...(values['s3-port'] !== undefined ? { s3Port: intOption(values['s3-port'], 's3-port') } : {}),
          ...(etcd ? { etcd } : {}),
        });
      }
      case 's3': {
        const { values } = parseArgs({ args: rest, options: { map: { type: 'string' }, listen: { type: 'string' }, 'meta-pool': { type: 'string' }, 'data-pool': { type: 'string' }, region: { type: 'string' } } });
        if (!values.map || !values.listen) throw new Error('s3 needs --map HOST:PORT and --listen HOST:PORT');
        return await runS3({
          io,
          map: values.map,
          ...parseListen(values.listen),
          metaPool: values['meta-pool'] ?? 'rep',
          dataPool: values['data-pool'] ?? 'rep',
          ...(values.region !== undefined ? { region: values.region } : {}),
        });
      }
      case 'user':
        return await userCommand(io, rest);
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
