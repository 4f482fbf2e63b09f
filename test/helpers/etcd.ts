/**
 * Real etcd for tests: one member or a cluster of several, each a process of
 * Debian's etcd (/usr/bin/etcd, package etcd-server; TESSERA_ETCD_BIN
 * overrides) with its own temporary data directory and its own client and
 * peer ports on 127.0.0.1. Members are stopped by PID (SIGTERM, then SIGKILL
 * after a timeout) and the directories removed on stop(), which the test
 * calls in afterAll, also when it failed; a process 'exit' hook kills any
 * member still running if the test process ends first. A member can be
 * killed (kill -9, by PID) and started again on the same directory and ports.
 *
 * Without the binary, `etcdMissing()` says why, and the etcd tests skip with
 * a loud warning (never a silent pass).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { makeTempDir } from './tmp.js';

export const etcdBin = process.env.TESSERA_ETCD_BIN ?? '/usr/bin/etcd';
const STOP_TIMEOUT_MS = 5_000;
const READY_TIMEOUT_MS = 30_000;
const STDERR_KEPT_BYTES = 16 * 1024;

/** Why the etcd tests cannot run here, or null if they can. */
export function etcdMissing(): string | null {
  return existsSync(etcdBin) ? null : `${etcdBin} is missing`;
}

/** Warns loudly (once per file) that `what` is skipped; true if it must be. */
export function skipWithoutEtcd(what: string): boolean {
  const missing = etcdMissing();
  if (missing === null) return false;
  console.warn(
    `\n*** SKIPPED: ${what}: ${missing}. Install it with \`apt-get install -y etcd-server\` (scripts/system-deps.sh does, ` +
      `as root), or point TESSERA_ETCD_BIN at an etcd 3.4+ binary. ***\n`,
  );
  return true;
}

export interface EtcdMember {
  readonly name: string;
  readonly clientUrl: string;
  readonly peerUrl: string;
  /** PID of the running process (null while stopped). */
  readonly pid: number | null;
  /** kill -9 by PID; resolves once the process is gone. */
  kill(): Promise<void>;
  /** Starts it again on the same data directory and ports (after kill); resolves once it is healthy. */
  restart(): Promise<void>;
  /** The last lines etcd wrote to stderr (for failure messages). */
  stderr(): string;
}

export interface EtcdCluster {
  members: EtcdMember[];
  /** Client URLs of every member. */
  endpoints: string[];
  /** The member that is the raft leader now (asks the running members). */
  leader(): Promise<EtcdMember>;
  /** Stops every member by PID and removes the data directories. Idempotent. */
  stop(): Promise<void>;
}

/** Distinct free loopback ports: all are held open together, then released. */
async function freePorts(count: number): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer();
      servers.push(server);
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', resolve);
      });
    }
    return servers.map((s) => (s.address() as { port: number }).port);
  } finally {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  }
}

async function healthy(clientUrl: string): Promise<boolean> {
  try {
    const res = await fetch(`${clientUrl}/health`, { signal: AbortSignal.timeout(1_000) });
    return ((await res.json()) as { health?: string }).health === 'true';
  } catch {
    return false;
  }
}

async function memberStatus(clientUrl: string): Promise<{ memberId: string; leader: string } | null> {
  try {
    const res = await fetch(`${clientUrl}/v3/maintenance/status`, { method: 'POST', body: '{}', signal: AbortSignal.timeout(1_000) });
    const body = (await res.json()) as { header?: { member_id?: string }; leader?: string };
    return body.header?.member_id && body.leader ? { memberId: body.header.member_id, leader: body.leader } : null;
  } catch {
    return null;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

class Member implements EtcdMember {
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();
  private stderrTail = '';

  constructor(
    readonly name: string,
    readonly clientUrl: string,
    readonly peerUrl: string,
    private readonly dataDir: string,
    private readonly initialCluster: string,
    private readonly token: string,
  ) {}

  get pid(): number | null {
    return this.child?.pid ?? null;
  }

  get running(): boolean {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  spawn(): void {
    const args = [
      `--name=${this.name}`,
      `--data-dir=${this.dataDir}`,
      `--listen-client-urls=${this.clientUrl}`,
      `--advertise-client-urls=${this.clientUrl}`,
      `--listen-peer-urls=${this.peerUrl}`,
      `--initial-advertise-peer-urls=${this.peerUrl}`,
      `--initial-cluster=${this.initialCluster}`,
      `--initial-cluster-token=${this.token}`,
      '--initial-cluster-state=new',
      // Short raft timings: a new leader within about a second of losing one.
      '--heartbeat-interval=50',
      '--election-timeout=500',
      // Room for maps beyond etcd's default 1.5 MiB request bound.
      '--max-request-bytes=17825792',
      '--logger=zap',
      '--log-outputs=stderr',
      '--log-level=warn',
    ];
    const child = spawn(etcdBin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.child = child;
    child.stderr!.on('data', (d: Buffer) => {
      this.stderrTail = (this.stderrTail + d.toString()).slice(-STDERR_KEPT_BYTES);
    });
    this.exited = new Promise<void>((resolve) => {
      child.once('exit', () => resolve());
      child.once('error', (err) => {
        this.stderrTail += `\nspawn failed: ${err.message}`;
        resolve();
      });
    });
  }

  /** Until /health says true; fails if the process exits or READY_TIMEOUT_MS passes. */
  async waitHealthy(): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    while (!(await healthy(this.clientUrl))) {
      if (!this.running) throw new Error(`etcd member ${this.name} exited before it was healthy:\n${this.stderrTail}`);
      if (Date.now() > deadline) throw new Error(`etcd member ${this.name} not healthy after ${READY_TIMEOUT_MS} ms:\n${this.stderrTail}`);
      await sleep(50);
    }
  }

  async kill(): Promise<void> {
    if (this.running) process.kill(this.child!.pid!, 'SIGKILL');
    await this.exited;
    this.child = null;
  }

  async restart(): Promise<void> {
    if (this.running) throw new Error(`etcd member ${this.name} is still running`);
    this.spawn();
    await this.waitHealthy();
  }

  /** SIGTERM by PID, SIGKILL after STOP_TIMEOUT_MS. */
  async stop(): Promise<void> {
    if (!this.running) return;
    const pid = this.child!.pid!;
    process.kill(pid, 'SIGTERM');
    const gone = await Promise.race([this.exited.then(() => true), sleep(STOP_TIMEOUT_MS).then(() => false)]);
    if (!gone && this.running) process.kill(pid, 'SIGKILL');
    await this.exited;
    this.child = null;
  }

  killNow(): void {
    if (this.running) process.kill(this.child!.pid!, 'SIGKILL');
  }

  stderr(): string {
    return this.stderrTail;
  }
}

/** Starts `size` members on loopback and waits until the cluster is healthy (has a leader). */
export async function startEtcdCluster(options: { size: number }): Promise<EtcdCluster> {
  const missing = etcdMissing();
  if (missing !== null) throw new Error(`cannot start etcd: ${missing}`);
  const root = await makeTempDir('etcd');
  const ports = await freePorts(options.size * 2);
  const names = Array.from({ length: options.size }, (_, i) => `m${i}`);
  const peerUrls = names.map((_, i) => `http://127.0.0.1:${ports[2 * i + 1]}`);
  const initialCluster = names.map((n, i) => `${n}=${peerUrls[i]}`).join(',');
  const token = `tessera-test-${process.pid}-${ports[0]}`;
  const members = await Promise.all(
    names.map(async (name, i) => {
      const dataDir = join(root.path, name);
      await mkdir(dataDir, { mode: 0o700 });
      return new Member(name, `http://127.0.0.1:${ports[2 * i]}`, peerUrls[i]!, dataDir, initialCluster, token);
    }),
  );
  const onExit = (): void => members.forEach((m) => m.killNow());
  process.once('exit', onExit);
  let stopped = false;
  const cluster: EtcdCluster = {
    members,
    endpoints: members.map((m) => m.clientUrl),
    async leader() {
      const deadline = Date.now() + READY_TIMEOUT_MS;
      for (;;) {
        for (const m of members.filter((x) => x.running)) {
          const status = await memberStatus(m.clientUrl);
          if (status && status.memberId === status.leader) return m;
        }
        if (Date.now() > deadline) throw new Error('no etcd leader found');
        await sleep(50);
      }
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      try {
        // One at a time: members stopped together keep each other waiting (leadership transfer) until SIGKILL.
        for (const m of members) await m.stop();
      } finally {
        process.removeListener('exit', onExit);
        await root.remove();
      }
    },
  };
  try {
    for (const m of members) m.spawn();
    await Promise.all(members.map((m) => m.waitHealthy()));
    return cluster;
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}
