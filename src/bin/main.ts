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
import { runRecoveryWatch } from '../cli/recovery.js';
import { runS3 } from '../cli/s3.js';
import { runMapd } from '../cli/mapd.js';
import type { LivenessOptions } from '../../cluster/liveness.js';
import { baseDomainsOf } from '../../gateways/s3/request.js';
import { isIndexShardCount } from '../../gateways/s3/meta/bucket-index.js';
import { limits } from '../lib/limits.js';
import { diskAdd, diskList, diskSetIn, hostAdd } from '../cli/disk-admin.js';
import { CONFIRM_FLAG, poolCreate, poolList, poolRemove } from '../cli/pool.js';
import { pgInconsistent, pgScrub, poolScrub, type ScrubCommandOptions } from '../cli/scrub.js';
import { pgRepairShard } from '../cli/shard-repair.js';
import { objectGet, objectList, objectPut, objectRemove, objectStat } from '../cli/object.js';
import { CliError, type TargetOptions } from '../cli/target.js';
import type { FailureDomain, PoolRedundancy } from '../../cluster/map.js';
import { runUser, userCreate, userKeyAdd, userKeyRemove, userList, userRemove, type ClusterTarget } from '../cli/user.js';

const usage = `usage: tessera <command> [options]

commands:
  up      [--data DIR] [--hosts N] [--disks-per-host N] [--base-port PORT] [--map-port PORT] [--s3-port PORT] [--pgs N] [--etcd URL[,URL...] [--map-daemons N]] [--metrics-port-offset N]
          [--down-grace-ms MS] [--out-interval-ms MS] [--lease-ms MS] [--near-full-ratio R] [--full-ratio R] [--domain D ...]
          [--peer-grace-ms MS] [--min-down-reporters N]
          [--recovery-bytes-per-sec N] [--recovery-ops-inflight N] [--recovery-ops-inflight-busy N]
          [--scrub-interval-ms MS] [--deep-scrub-interval-ms MS] [--scrub-bytes-per-sec N] [--s3-gets-per-client-max N] [--s3-index-shards N]
          run an all-in-one cluster on local directories (default ./tessera-data) with an
          S3 endpoint on 127.0.0.1 (default port 9000) and an admin user (keys in DIR/client.json);
          Prometheus metrics of every daemon, the map service and the S3 gateway on their port +
          --metrics-port-offset (1000; the URLs are printed, the ports kept in DIR/cluster.json);
          with --etcd, the cluster map lives in etcd (give it on every run) and --map-daemons (3)
          map daemon processes on ports --map-port, --map-port + 1, ... serve it (any one may die);
          a disk silent for
          --down-grace-ms (20000) is marked down, one down for --out-interval-ms (600000) out;
          a primary serves clients for --lease-ms (half the grace) after each answered heartbeat;
          a disk its peers (daemons sharing pgs with it) cannot ping for --peer-grace-ms (the down
          grace), reported by disks of --min-down-reporters (2) other hosts, gets no more leases
          and is marked down once its last lease has ended;
          writes to pgs with a disk over --full-ratio (0.95) fail Full (near full: 0.85);
          the recovery and scrub flags are passed to every daemon (see daemon below),
          --s3-gets-per-client-max and --s3-index-shards to the S3 gateway (its --gets-per-client-max
          and --index-shards, see s3 below)
  mapd    --etcd URL[,URL...] --cluster-id ID --listen HOST:PORT
          [--down-grace-ms MS] [--out-interval-ms MS] [--lease-ms MS] [--near-full-ratio R] [--full-ratio R]
          [--peer-grace-ms MS] [--min-down-reporters N]
          serve the map of a cluster kept in etcd (made by up --etcd); run several: daemons and
          clients given --map A,B,... fail over between them, and one of them at a time (elected
          in etcd) marks silent disks down and out
  status  [--pgs] [--json]
          health (with reasons: disks down, out, full, reported by their peers, with a lapsed
          primary lease...), disks up/in, pools, pgs by state, recovery over the cluster and by
          pool (pgs degraded, recovering, backfilling; objects and bytes left, rate, ETA),
          capacity; --pgs: one row per pg not active+clean (state, primary, objects and bytes
          left; --json always has them as pgsNotClean)
  recovery watch [--interval-ms MS] [--once] [--json]
          a progress bar of recovery (percentage, left, rate, ETA) redrawn every --interval-ms
          (1000; one line per update when stdout is not a terminal) until every pg is active and
          complete (exit 0) or Ctrl-C (130); --once: one update, exit 0 if done, 1 if work is left
  disk ls [--json]
  disk add --host HOST [--weight W]
          (all-in-one cluster of --data: creates the disk, \`tessera up\` starts its daemon, then it is marked in)
  disk add --host HOST [--weight W] --address HOST:PORT [--wait]
          a disk on another machine (any cluster, --map or --data): adds it down and out at HOST:PORT and
          prints the \`tessera daemon\` command to run there; --wait: wait (60 s) for it to come up, then mark it in
  disk out ID | disk in ID
          mark a disk out (its pgs move to other disks) or in again
  host add NAME [--rack RACK]
  pool create NAME [--replicated SIZE [--min-size N] | --erasure K+M] [--pgs N] [--failure-domain disk|host|rack|site]
          (default: replicated 3, min_size 2, 64 pgs, one member per host)
  pool ls [--json]
  pool rm NAME --yes-i-really-mean-it
  pool scrub POOL [--deep] [--repair] [--bytes-per-sec N] [--json]
  pg scrub POOL.PG [--deep] [--repair] [--bytes-per-sec N] [--json]
          compare the copies of every object of the pool's pgs (of one pg) on their members:
          sizes, versions, xattrs, omap; --deep also reads and verifies all data; --repair
          pushes the authoritative copy to members that differ (exit 1 if any is left)
  pg inconsistent [POOL | POOL.PG] [--json]
          list what each pg's last scrub (on demand or in the background) left unrepaired
  pg repair-shard POOL OBJECT (--position N | --disk ID) [--json]
          erasure-coded pools: rebuild the object's shard at position N (or the one disk ID holds)
          from k of the other shards, under the object's lock, replaced only once built; for a
          shard you know is wrong where a scrub cannot tell which (exit 1, nothing changed, when
          fewer than k other shards read at the object's version)
  object put --pool POOL NAME FILE|-
  object get --pool POOL NAME [FILE|-]
  object ls --pool POOL [--limit N] [--cursor C] [--json]
  object stat --pool POOL NAME [--json]
  object rm --pool POOL NAME
          status, disk, host, pool and object commands act on the cluster of --data DIR
          (default ./tessera-data: its client.json names the map service) or --map HOST:PORT[,HOST:PORT...]
  daemon  --disk DIR --listen HOST:PORT [--cluster-id ID --disk-id N] [--map HOST:PORT[,HOST:PORT...]] [--metrics HOST:PORT] [--capacity-bytes N]
          [--scrub-interval-ms MS] [--deep-scrub-interval-ms MS] [--scrub-bytes-per-sec N]
          [--recovery-bytes-per-sec N] [--recovery-ops-inflight N] [--recovery-ops-inflight-busy N] [--stop-timeout-ms MS]
          serve one disk (initialized on first start when --cluster-id and --disk-id are given);
          with --map, as a member of the cluster whose map service listens there (several map
          daemons of a cluster on etcd: it fails over between them);
          --capacity-bytes caps the store (full ratios apply to it; default: the file system);
          background scrub of the pgs it is primary of every --scrub-interval-ms (1 day),
          deep every --deep-scrub-interval-ms (7 days; 0: never), reading --scrub-bytes-per-sec;
          recovery it drives as primary copies --recovery-bytes-per-sec (200 MiB/s; 0: no limit)
          with at most --recovery-ops-inflight (4) copies at once, and while its clients are
          active at most --recovery-ops-inflight-busy (1) backfill copies (copies a pg waits
          for before it serves I/O go first and are not held back); on SIGTERM/SIGINT it stops
          cleanly, or exits without a clean close after --stop-timeout-ms (30000; nothing acknowledged is lost)
  disk init --disk DIR --cluster-id ID --disk-id N
          initialize a disk directory
  s3      --map HOST:PORT --listen HOST:PORT [--meta-pool POOL] [--data-pool POOL] [--region R] [--domain D ...]
          serve S3 for the cluster whose map service listens at --map (pools default to rep);
          [--journal-grace-ms MS] [--journal-sweep-interval-ms MS] [--gets-per-client-max N] [--index-shards N] [--metrics HOST:PORT]
          --domain (repeatable): Host bucket.D/key addresses bucket (virtual-host style; default localhost);
          buckets it creates get --index-shards (8; 1-1024) index shard objects, kept in each bucket's record
          (existing buckets keep theirs; \`tessera up --s3-index-shards N\` passes it on; set it other than 8
          only once every gateway runs this version: older ones use 8 for every bucket);
          data that writes journaled and never committed or freed (a killed gateway) is freed once older
          than --journal-grace-ms (3600000), by a sweep at start and every --journal-sweep-interval-ms (600000);
          a client (access key, else address) with --gets-per-client-max (8) GETs in flight gets 503 SlowDown;
          --metrics: Prometheus metrics at http://HOST:PORT/metrics (requests, bytes, errors, durations by operation)
  user create --name NAME [--email E] [--access-key AK --secret-key SK|-]
  user ls [--json]
  user rm USER
  user key add USER [--access-key AK --secret-key SK|-]
  user key rm ACCESS_KEY
          S3 users and access keys of the cluster named by --data DIR (default ./tessera-data)
          or --map HOST:PORT; USER is a user id or a unique name; keys are generated unless
          given (--secret-key - reads the secret from standard input); a secret is shown only
          when it is created
`;

/** --index-shards: the index shard count of new buckets (gateways/s3/meta/bucket-index.ts), within limits. */
function indexShardsOption(value: string, name: string): number {
  const n = Number(value);
  if (!isIndexShardCount(n)) throw new CliError(`--${name} wants an integer from ${limits.s3IndexShardsMin} to ${limits.s3IndexShardsMax}, got ${value}`);
  return n;
}

/** --domain values (repeatable, each may also be a comma-separated list), checked. */
function domainsOption(values: string[]): string[] {
  return baseDomainsOf(values.flatMap((v) => v.split(',')).filter((v) => v.trim() !== ''));
}

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
  json: { type: 'boolean' },
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
      return runUser(target, (s) => userList(s, out, values.json === true));
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

function parseListen(value: string, flag = 'listen'): { host: string; port: number } {
  const at = value.lastIndexOf(':');
  const port = Number(value.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--${flag} wants HOST:PORT, got ${value}`);
  return { host: value.slice(0, at), port };
}

const livenessFlagOptions = {
  'down-grace-ms': { type: 'string' },
  'out-interval-ms': { type: 'string' },
  'lease-ms': { type: 'string' },
  'near-full-ratio': { type: 'string' },
  'full-ratio': { type: 'string' },
  'peer-grace-ms': { type: 'string' },
  'min-down-reporters': { type: 'string' },
} as const;

/** The map daemon's failure detection flags (up, mapd). */
function livenessFlags(values: Partial<Record<keyof typeof livenessFlagOptions, string | undefined>>): LivenessOptions {
  const ratio = (v: string | undefined, name: string): number | undefined => {
    if (v === undefined) return undefined;
    const r = Number(v);
    if (!(r > 0 && r <= 1)) throw new Error(`--${name} wants a number in (0, 1], got ${v}`);
    return r;
  };
  return {
    ...(values['down-grace-ms'] !== undefined ? { downGraceMs: intOption(values['down-grace-ms'], 'down-grace-ms') } : {}),
    ...(values['out-interval-ms'] !== undefined ? { outIntervalMs: intOption(values['out-interval-ms'], 'out-interval-ms') } : {}),
    ...(values['lease-ms'] !== undefined ? { leaseMs: intOption(values['lease-ms'], 'lease-ms') } : {}),
    ...(values['near-full-ratio'] !== undefined ? { nearFullRatio: ratio(values['near-full-ratio'], 'near-full-ratio')! } : {}),
    ...(values['full-ratio'] !== undefined ? { fullRatio: ratio(values['full-ratio'], 'full-ratio')! } : {}),
    ...(values['peer-grace-ms'] !== undefined ? { peerGraceMs: intOption(values['peer-grace-ms'], 'peer-grace-ms') } : {}),
    ...(values['min-down-reporters'] !== undefined ? { minDownReporters: intOption(values['min-down-reporters'], 'min-down-reporters') } : {}),
  };
}

function etcdFlag(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const etcd = value.split(',').map((u) => u.trim()).filter((u) => u !== '');
  if (etcd.length === 0) throw new Error('--etcd wants URL[,URL...]');
  return etcd;
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

function positiveIntOption(value: string, name: string): number {
  const n = intOption(value, name);
  if (n < 1) throw new Error(`--${name} wants a positive integer, got ${value}`);
  return n;
}

const targetOptions = { data: { type: 'string' }, map: { type: 'string' }, json: { type: 'boolean' } } as const;

function targetOf(io: ReturnType<typeof systemIo>, values: { data?: string | undefined; map?: string | undefined }): TargetOptions {
  if (values.data !== undefined && values.map !== undefined) throw new CliError('give --data DIR or --map HOST:PORT, not both');
  return { io, ...(values.data !== undefined ? { dataDir: values.data } : {}), ...(values.map !== undefined ? { map: values.map } : {}) };
}

const out = (text: string): void => void process.stdout.write(text);
const err = (text: string): void => void process.stderr.write(text);

function diskIdArg(value: string | undefined, usage: string): number {
  if (value === undefined) throw new CliError(`usage: ${usage}`);
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) throw new CliError(`a disk id is a non-negative integer, got ${value}`);
  return n;
}

/** Positionals must be exactly `count`; else the usage line. */
function exactly(positionals: string[], count: number, usage: string): string[] {
  if (positionals.length !== count) throw new CliError(`usage: ${usage}`);
  return positionals;
}

async function diskCommand(io: ReturnType<typeof systemIo>, sub: string | undefined, args: string[]): Promise<number> {
  if (sub === 'init') {
    const { values } = parseArgs({ args, options: { disk: { type: 'string' }, 'cluster-id': { type: 'string' }, 'disk-id': { type: 'string' } } });
    if (!values.disk || !values['cluster-id']) throw new CliError('usage: tessera disk init --disk DIR --cluster-id ID --disk-id N');
    await initDisk({ io, diskPath: values.disk, clusterId: values['cluster-id'], diskId: intOption(values['disk-id'], 'disk-id') });
    return 0;
  }
  const { values, positionals } = parseArgs({ args, options: { ...targetOptions, host: { type: 'string' }, weight: { type: 'string' }, address: { type: 'string' }, wait: { type: 'boolean' } }, allowPositionals: true });
  const target = targetOf(io, values);
  switch (sub) {
    case 'ls':
      exactly(positionals, 0, 'tessera disk ls [--json]');
      await diskList(target, values.json === true, out);
      return 0;
    case 'add': {
      const usage = 'tessera disk add --host HOST [--weight W] [--address HOST:PORT [--wait]]';
      exactly(positionals, 0, usage);
      if (!values.host) throw new CliError(`usage: ${usage}`);
      const weight = values.weight === undefined ? 1 : Number(values.weight);
      if (!Number.isFinite(weight) || weight <= 0) throw new CliError(`--weight wants a positive number, got ${values.weight}`);
      if (values.address !== undefined && !/^[^:\s]+:\d+$/.test(values.address)) throw new CliError(`--address wants HOST:PORT, got ${values.address}`);
      await diskAdd(target, { host: values.host, weight, ...(values.address !== undefined ? { address: values.address } : {}), ...(values.wait === true ? { wait: true } : {}) }, out);
      return 0;
    }
    case 'out':
    case 'in': {
      const [id] = exactly(positionals, 1, `tessera disk ${sub} ID`);
      await diskSetIn(target, { diskId: diskIdArg(id, `tessera disk ${sub} ID`), in: sub === 'in' }, out);
      return 0;
    }
    default:
      throw new CliError('usage: tessera disk ls|add|out|in|init (see tessera help)');
  }
}

async function hostCommand(io: ReturnType<typeof systemIo>, sub: string | undefined, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { ...targetOptions, rack: { type: 'string' } }, allowPositionals: true });
  if (sub !== 'add') throw new CliError('usage: tessera host add NAME [--rack RACK]');
  const [name] = exactly(positionals, 1, 'tessera host add NAME [--rack RACK]');
  await hostAdd(targetOf(io, values), { name: name!, ...(values.rack !== undefined ? { rack: values.rack } : {}) }, out);
  return 0;
}

const FAILURE_DOMAINS: readonly FailureDomain[] = ['disk', 'host', 'rack', 'site'];

function redundancyOf(values: { replicated?: string | undefined; 'min-size'?: string | undefined; erasure?: string | undefined }): PoolRedundancy {
  if (values.erasure !== undefined) {
    if (values.replicated !== undefined || values['min-size'] !== undefined) throw new CliError('--erasure K+M excludes --replicated and --min-size');
    const m = /^(\d+)\+(\d+)$/.exec(values.erasure);
    if (!m) throw new CliError(`--erasure wants K+M (e.g. 4+2), got ${values.erasure}`);
    return { type: 'erasure', dataShards: Number(m[1]), parityShards: Number(m[2]) };
  }
  const size = intOption(values.replicated, 'replicated', 3);
  return { type: 'replicated', size, minSize: intOption(values['min-size'], 'min-size', Math.max(1, size - 1)) };
}

/** Daemon flags `tessera up` passes on to every daemon it runs (checked here, so a typo fails at once). */
const daemonPaceFlags = {
  'recovery-bytes-per-sec': { type: 'string' },
  'recovery-ops-inflight': { type: 'string' },
  'recovery-ops-inflight-busy': { type: 'string' },
  'scrub-interval-ms': { type: 'string' },
  'deep-scrub-interval-ms': { type: 'string' },
  'scrub-bytes-per-sec': { type: 'string' },
} as const;

function daemonPaceArgs(values: Partial<Record<keyof typeof daemonPaceFlags, string | undefined>>): string[] {
  const args: string[] = [];
  for (const name of Object.keys(daemonPaceFlags) as Array<keyof typeof daemonPaceFlags>) {
    const v = values[name];
    if (v !== undefined) args.push(`--${name}`, String(intOption(v, name)));
  }
  return args;
}

const scrubFlags = { deep: { type: 'boolean' }, repair: { type: 'boolean' }, 'bytes-per-sec': { type: 'string' } } as const;

function scrubOptions(values: { deep?: boolean | undefined; repair?: boolean | undefined; json?: boolean | undefined; 'bytes-per-sec'?: string | undefined }): ScrubCommandOptions {
  return {
    deep: values.deep === true,
    repair: values.repair === true,
    json: values.json === true,
    ...(values['bytes-per-sec'] !== undefined ? { bytesPerSec: intOption(values['bytes-per-sec'], 'bytes-per-sec') } : {}),
  };
}

async function pgCommand(io: ReturnType<typeof systemIo>, sub: string | undefined, args: string[]): Promise<number> {
  const usage = 'tessera pg scrub POOL.PG [--deep] [--repair] [--bytes-per-sec N] [--json] | tessera pg inconsistent [POOL | POOL.PG] [--json] | tessera pg repair-shard POOL OBJECT (--position N | --disk ID) [--json]';
  if (sub === 'repair-shard') {
    const shardUsage = 'tessera pg repair-shard POOL OBJECT (--position N | --disk ID) [--json]';
    const { values, positionals } = parseArgs({ args, options: { ...targetOptions, position: { type: 'string' }, disk: { type: 'string' } }, allowPositionals: true });
    const [pool, name] = exactly(positionals, 2, shardUsage);
    if ((values.position === undefined) === (values.disk === undefined)) throw new CliError(`usage: ${shardUsage} (one of --position and --disk)`);
    return pgRepairShard(
      targetOf(io, values),
      { pool: pool!, name: name!, json: values.json === true, ...(values.position !== undefined ? { position: intOption(values.position, 'position') } : { diskId: intOption(values.disk, 'disk') }) },
      out,
    );
  }
  const { values, positionals } = parseArgs({ args, options: { ...targetOptions, ...scrubFlags }, allowPositionals: true });
  if (sub === 'inconsistent') {
    if (positionals.length > 1 || values.deep !== undefined || values.repair !== undefined || values['bytes-per-sec'] !== undefined) throw new CliError(`usage: ${usage}`);
    return pgInconsistent(targetOf(io, values), { ...(positionals[0] !== undefined ? { what: positionals[0] } : {}), json: values.json === true }, out);
  }
  if (sub !== 'scrub') throw new CliError(`usage: ${usage}`);
  const [pgid] = exactly(positionals, 1, usage);
  return pgScrub(targetOf(io, values), { pgid: pgid!, ...scrubOptions(values) }, out);
}

async function poolCommand(io: ReturnType<typeof systemIo>, sub: string | undefined, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    options: { ...targetOptions, ...scrubFlags, replicated: { type: 'string' }, 'min-size': { type: 'string' }, erasure: { type: 'string' }, pgs: { type: 'string' }, 'failure-domain': { type: 'string' }, [CONFIRM_FLAG]: { type: 'boolean' } },
    allowPositionals: true,
  });
  const target = targetOf(io, values);
  switch (sub) {
    case 'create': {
      const usage = 'tessera pool create NAME [--replicated SIZE [--min-size N] | --erasure K+M] [--pgs N] [--failure-domain disk|host|rack|site]';
      const [name] = exactly(positionals, 1, usage);
      const failureDomain = (values['failure-domain'] ?? 'host') as FailureDomain;
      if (!FAILURE_DOMAINS.includes(failureDomain)) throw new CliError(`--failure-domain wants one of ${FAILURE_DOMAINS.join(', ')}, got ${failureDomain}`);
      await poolCreate(target, { name: name!, redundancy: redundancyOf(values), failureDomain, pgCount: intOption(values.pgs, 'pgs', 64) }, out);
      return 0;
    }
    case 'ls':
      exactly(positionals, 0, 'tessera pool ls [--json]');
      await poolList(target, values.json === true, out);
      return 0;
    case 'rm': {
      const [name] = exactly(positionals, 1, `tessera pool rm NAME --${CONFIRM_FLAG}`);
      await poolRemove(target, { name: name!, confirmed: values[CONFIRM_FLAG] === true }, out);
      return 0;
    }
    case 'scrub': {
      const [name] = exactly(positionals, 1, 'tessera pool scrub POOL [--deep] [--repair] [--bytes-per-sec N] [--json]');
      return poolScrub(target, { pool: name!, ...scrubOptions(values) }, out);
    }
    default:
      throw new CliError('usage: tessera pool create|ls|rm|scrub (see tessera help)');
  }
}

async function objectCommand(io: ReturnType<typeof systemIo>, sub: string | undefined, args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { ...targetOptions, pool: { type: 'string' }, limit: { type: 'string' }, cursor: { type: 'string' } }, allowPositionals: true });
  const target = targetOf(io, values);
  const pool = values.pool;
  const needPool = (usage: string): string => {
    if (pool === undefined) throw new CliError(`usage: ${usage} (--pool is required)`);
    return pool;
  };
  switch (sub) {
    case 'put': {
      const usage = 'tessera object put --pool POOL NAME FILE|-';
      const [name, file] = exactly(positionals, 2, usage);
      await objectPut(target, { pool: needPool(usage), name: name!, file: file! }, out);
      return 0;
    }
    case 'get': {
      const usage = 'tessera object get --pool POOL NAME [FILE|-]';
      if (positionals.length < 1 || positionals.length > 2) throw new CliError(`usage: ${usage}`);
      const [name, file] = positionals;
      await objectGet(target, { pool: needPool(usage), name: name!, ...(file !== undefined ? { file } : {}) });
      return 0;
    }
    case 'ls': {
      const usage = 'tessera object ls --pool POOL [--limit N] [--cursor C] [--json]';
      exactly(positionals, 0, usage);
      await objectList(target, { pool: needPool(usage), json: values.json === true, ...(values.limit !== undefined ? { limit: intOption(values.limit, 'limit') } : {}), ...(values.cursor !== undefined ? { cursor: values.cursor } : {}) }, out, err);
      return 0;
    }
    case 'stat': {
      const usage = 'tessera object stat --pool POOL NAME [--json]';
      const [name] = exactly(positionals, 1, usage);
      await objectStat(target, { pool: needPool(usage), name: name!, json: values.json === true }, out);
      return 0;
    }
    case 'rm': {
      const usage = 'tessera object rm --pool POOL NAME';
      const [name] = exactly(positionals, 1, usage);
      await objectRemove(target, { pool: needPool(usage), name: name! }, out);
      return 0;
    }
    default:
      throw new CliError('usage: tessera object put|get|ls|stat|rm (see tessera help)');
  }
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const io = systemIo();
  try {
    switch (command) {
      case 'daemon': {
        const { values } = parseArgs({ args: rest, options: { disk: { type: 'string' }, listen: { type: 'string' }, 'cluster-id': { type: 'string' }, 'disk-id': { type: 'string' }, map: { type: 'string' }, 'capacity-bytes': { type: 'string' }, metrics: { type: 'string' }, 'scrub-interval-ms': { type: 'string' }, 'deep-scrub-interval-ms': { type: 'string' }, 'scrub-bytes-per-sec': { type: 'string' }, 'recovery-bytes-per-sec': { type: 'string' }, 'recovery-ops-inflight': { type: 'string' }, 'recovery-ops-inflight-busy': { type: 'string' }, 'stop-timeout-ms': { type: 'string' } } });
        if (!values.disk || !values.listen) throw new Error('daemon needs --disk DIR and --listen HOST:PORT');
        const capacityBytes = values['capacity-bytes'] === undefined ? undefined : intOption(values['capacity-bytes'], 'capacity-bytes');
        const clusterId = values['cluster-id'];
        const diskId = values['disk-id'] === undefined ? undefined : intOption(values['disk-id'], 'disk-id');
        const scrub = {
          ...(values['scrub-interval-ms'] !== undefined ? { intervalMs: intOption(values['scrub-interval-ms'], 'scrub-interval-ms') } : {}),
          ...(values['deep-scrub-interval-ms'] !== undefined ? { deepIntervalMs: intOption(values['deep-scrub-interval-ms'], 'deep-scrub-interval-ms') } : {}),
          ...(values['scrub-bytes-per-sec'] !== undefined ? { bytesPerSec: intOption(values['scrub-bytes-per-sec'], 'scrub-bytes-per-sec') } : {}),
        };
        const recovery = {
          ...(values['recovery-bytes-per-sec'] !== undefined ? { bytesPerSec: intOption(values['recovery-bytes-per-sec'], 'recovery-bytes-per-sec') } : {}),
          ...(values['recovery-ops-inflight'] !== undefined ? { opsInflightMax: intOption(values['recovery-ops-inflight'], 'recovery-ops-inflight') } : {}),
          ...(values['recovery-ops-inflight-busy'] !== undefined ? { opsInflightBusyMax: intOption(values['recovery-ops-inflight-busy'], 'recovery-ops-inflight-busy') } : {}),
        };
        return await runDaemon({
          io,
          diskPath: values.disk,
          ...parseListen(values.listen),
          ...(clusterId !== undefined ? { clusterId } : {}),
          ...(diskId !== undefined ? { diskId } : {}),
          ...(values.map !== undefined ? { map: values.map } : {}),
          ...(capacityBytes !== undefined ? { capacityBytes } : {}),
          ...(values.metrics !== undefined ? { metrics: parseListen(values.metrics, 'metrics') } : {}),
          scrub,
          recovery,
          ...(values['stop-timeout-ms'] !== undefined ? { stopTimeoutMs: intOption(values['stop-timeout-ms'], 'stop-timeout-ms') } : {}),
        });
      }
      case 'disk':
        return await diskCommand(io, rest[0], rest.slice(1));
      case 'host':
        return await hostCommand(io, rest[0], rest.slice(1));
      case 'pool':
        return await poolCommand(io, rest[0], rest.slice(1));
      case 'object':
        return await objectCommand(io, rest[0], rest.slice(1));
      case 'pg':
        return await pgCommand(io, rest[0], rest.slice(1));
      case 'up': {
        const { values } = parseArgs({
          args: rest,
          options: { data: { type: 'string' }, hosts: { type: 'string' }, 'disks-per-host': { type: 'string' }, 'base-port': { type: 'string' }, 'map-port': { type: 'string' }, 's3-port': { type: 'string' }, pgs: { type: 'string' }, etcd: { type: 'string' }, 'map-daemons': { type: 'string' }, 'metrics-port-offset': { type: 'string' }, ...livenessFlagOptions, domain: { type: 'string', multiple: true }, 's3-gets-per-client-max': { type: 'string' }, 's3-index-shards': { type: 'string' }, ...daemonPaceFlags },
        });
        const liveness = livenessFlags(values);
        const etcd = etcdFlag(values.etcd);
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
          ...(values['map-daemons'] !== undefined ? { mapDaemons: intOption(values['map-daemons'], 'map-daemons') } : {}),
          ...(values.domain !== undefined ? { s3Domains: domainsOption(values.domain) } : {}),
          ...(values['s3-gets-per-client-max'] !== undefined ? { s3GetsPerClientMax: positiveIntOption(values['s3-gets-per-client-max'], 's3-gets-per-client-max') } : {}),
          ...(values['s3-index-shards'] !== undefined ? { s3IndexShards: indexShardsOption(values['s3-index-shards'], 's3-index-shards') } : {}),
          ...(values['metrics-port-offset'] !== undefined ? { metricsPortOffset: intOption(values['metrics-port-offset'], 'metrics-port-offset') } : {}),
          liveness,
          daemonArgs: daemonPaceArgs(values),
        });
      }
      case 'mapd': {
        const { values } = parseArgs({ args: rest, options: { etcd: { type: 'string' }, 'cluster-id': { type: 'string' }, listen: { type: 'string' }, ...livenessFlagOptions } });
        const etcd = etcdFlag(values.etcd);
        if (!etcd || values['cluster-id'] === undefined || !values.listen) throw new Error('mapd needs --etcd URL[,URL...], --cluster-id ID and --listen HOST:PORT');
        return await runMapd({ io, etcd, clusterId: values['cluster-id'], ...parseListen(values.listen), liveness: livenessFlags(values) });
      }
      case 's3': {
        const { values } = parseArgs({ args: rest, options: { map: { type: 'string' }, listen: { type: 'string' }, 'meta-pool': { type: 'string' }, 'data-pool': { type: 'string' }, region: { type: 'string' }, domain: { type: 'string', multiple: true }, 'journal-grace-ms': { type: 'string' }, 'journal-sweep-interval-ms': { type: 'string' }, 'gets-per-client-max': { type: 'string' }, 'index-shards': { type: 'string' }, metrics: { type: 'string' } } });
        if (!values.map || !values.listen) throw new Error('s3 needs --map HOST:PORT and --listen HOST:PORT');
        return await runS3({
          io,
          map: values.map,
          ...parseListen(values.listen),
          metaPool: values['meta-pool'] ?? 'rep',
          dataPool: values['data-pool'] ?? 'rep',
          ...(values.region !== undefined ? { region: values.region } : {}),
          ...(values.domain !== undefined ? { domains: domainsOption(values.domain) } : {}),
          ...(values['index-shards'] !== undefined ? { indexShards: indexShardsOption(values['index-shards'], 'index-shards') } : {}),
          ...(values['journal-grace-ms'] !== undefined ? { journalGraceMs: intOption(values['journal-grace-ms'], 'journal-grace-ms') } : {}),
          ...(values['journal-sweep-interval-ms'] !== undefined ? { journalSweepIntervalMs: intOption(values['journal-sweep-interval-ms'], 'journal-sweep-interval-ms') } : {}),
          ...(values['gets-per-client-max'] !== undefined ? { getsPerClientMax: positiveIntOption(values['gets-per-client-max'], 'gets-per-client-max') } : {}),
          ...(values.metrics !== undefined ? { metrics: parseListen(values.metrics, 'metrics') } : {}),
          ...(process.env.TESSERA_S3_FAULT ? { faultPoint: process.env.TESSERA_S3_FAULT } : {}),
        });
      }
      case 'user':
        return await userCommand(io, rest);
      case 'recovery': {
        const watchUsage = 'tessera recovery watch [--data DIR | --map HOST:PORT] [--interval-ms MS] [--once] [--json]';
        const { values, positionals } = parseArgs({ args: rest, options: { ...targetOptions, 'interval-ms': { type: 'string' }, once: { type: 'boolean' } }, allowPositionals: true });
        const [sub] = exactly(positionals, 1, watchUsage);
        if (sub !== 'watch') throw new CliError(`usage: ${watchUsage}`);
        return await runRecoveryWatch({ ...targetOf(io, values), intervalMs: intOption(values['interval-ms'], 'interval-ms', 1000), once: values.once === true, json: values.json === true });
      }
      case 'status': {
        const { values, positionals } = parseArgs({ args: rest, options: { ...targetOptions, pgs: { type: 'boolean' } }, allowPositionals: true });
        exactly(positionals, 0, 'tessera status [--data DIR | --map HOST:PORT] [--pgs] [--json]');
        return await runStatus({ ...targetOf(io, values), json: values.json === true, pgs: values.pgs === true });
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(usage);
        return command === undefined ? 2 : 0;
      default:
        process.stderr.write(`tessera: unknown command ${command} (tessera help lists them)\n`);
        return 2;
    }
  } catch (err) {
    const message = err instanceof CliError ? err.message : isTesseraError(err) ? `${err.code}: ${err.message}` : err instanceof Error ? err.message : String(err);
    // One line: scripts read the first line of stderr.
    process.stderr.write(`tessera ${command ?? ''}: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
    return 1;
  }
}
