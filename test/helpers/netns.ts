/**
 * Virtual hosts for tests: each host is a Linux network namespace of its own,
 * joined to a bridge in the root namespace by a veth pair, with an address in
 * a private /24 (10.77.N.0/24; the bridge is .1, host i is .(i+2)). Processes
 * of a host run inside its namespace (`ip netns exec`), so a host's daemons
 * listen on its own address and the links between hosts can be cut for real:
 * a whole host by taking its veth down (cutHost), one pair of hosts by DROP
 * rules in both namespaces (cutPair, needs iptables).
 *
 * Every name starts with `tf<pid><letter>` (the test process's pid, then one
 * letter per lab of that process), so parallel runs never collide; the lab removes everything it made in remove(), also when the
 * test fails (call it from afterAll; processes still inside are killed), and
 * at process exit as a last resort. Leftovers of a run that was killed -9
 * (its pid gone), processes inside included, are swept at creation.
 *
 * netnsSupport() says whether namespaces can be made here (root or
 * CAP_NET_ADMIN, the `ip` tool) and, if not, why: tests skip loudly with it.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface NetnsSupport {
  ok: boolean;
  /** Why namespaces cannot be used (when !ok). */
  reason: string;
  /** iptables is there: pairs of hosts can be partitioned (cutPair). */
  pairCuts: boolean;
}

export interface NetnsLab {
  /** Prefix of every name this lab made (`tf<pid><letter>`). */
  prefix: string;
  /** Address of the bridge in the root namespace (where the map service and the test's client live). */
  rootAddress: string;
  hostCount: number;
  /** Namespace name of host i. */
  ns(host: number): string;
  /** Address of host i inside its namespace. */
  address(host: number): string;
  /** argv prefix that runs a command inside host i's namespace. */
  execPrefix(host: number): string[];
  /** Takes host i's link down: it reaches nobody and nobody reaches it. */
  cutHost(host: number): Promise<void>;
  healHost(host: number): Promise<void>;
  /** Drops every packet between hosts a and b (both directions); the rest of the network works. */
  cutPair(a: number, b: number): Promise<void>;
  healPair(a: number, b: number): Promise<void>;
  /**
   * Drops every packet between host h and the given hosts, and between h and the given TCP ports of the root
   * namespace (both directions, rules in h's namespace); h still reaches, and is reached by, the rest (say, a
   * client in the root namespace while the map service there is cut off). Needs iptables.
   */
  cutHostFrom(h: number, from: { hosts: number[]; rootPorts: number[] }): Promise<void>;
  /** Heals every cut this lab made. */
  healAll(): Promise<void>;
  /** Removes every namespace, link and bridge of the lab (idempotent). */
  remove(): Promise<void>;
}

const ip = (...args: string[]): Promise<unknown> => run('ip', args);

function hasCommand(name: string): boolean {
  return ['/usr/sbin', '/sbin', '/usr/bin', '/bin', '/usr/local/sbin', '/usr/local/bin'].some((d) => existsSync(`${d}/${name}`));
}

/** Whether this process can make namespaces (tries one and removes it). */
export async function netnsSupport(): Promise<NetnsSupport> {
  const pairCuts = hasCommand('iptables');
  if (process.platform !== 'linux') return { ok: false, reason: `network namespaces need Linux (this is ${process.platform})`, pairCuts };
  if (!hasCommand('ip')) return { ok: false, reason: 'the `ip` tool (iproute2) is not installed', pairCuts };
  const probe = `tp${process.pid}`;
  try {
    await ip('netns', 'add', probe);
  } catch (err) {
    const uid = process.getuid?.() ?? -1;
    return { ok: false, reason: `\`ip netns add\` failed (uid ${uid}; needs root or CAP_NET_ADMIN + CAP_SYS_ADMIN): ${(err as Error).message.trim()}`, pairCuts };
  }
  try {
    await ip('link', 'add', `${probe}v`, 'type', 'veth', 'peer', 'name', `${probe}p`);
    await ip('link', 'del', `${probe}v`);
  } catch (err) {
    return { ok: false, reason: `cannot make veth pairs: ${(err as Error).message.trim()}`, pairCuts };
  } finally {
    await ip('netns', 'del', probe).catch(() => undefined);
  }
  return { ok: true, reason: '', pairCuts };
}

const pidAlive = (pid: number): boolean => existsSync(`/proc/${pid}`);

/** SIGKILLs whatever still runs inside a namespace (daemons of a test that was itself killed). */
async function killInside(ns: string): Promise<void> {
  const { stdout } = await run('ip', ['netns', 'pids', ns]).catch(() => ({ stdout: '' }));
  for (const pid of stdout.split(/\s+/).filter(Boolean).map(Number)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Removes namespaces (and what runs in them) and bridges of earlier runs whose test process is gone. */
async function sweepLeftovers(): Promise<void> {
  const { stdout: nsList } = await run('ip', ['netns', 'list']);
  for (const line of nsList.split('\n')) {
    const m = /^(tf(\d+)[a-z]h\d+)\b/.exec(line.trim());
    if (m && !pidAlive(Number(m[2]))) {
      await killInside(m[1]!);
      await ip('netns', 'del', m[1]!).catch(() => undefined);
    }
  }
  const { stdout: links } = await run('ip', ['-o', 'link', 'show']);
  for (const line of links.split('\n')) {
    const m = /^\d+:\s+(tf(\d+)[a-z](?:br|v\d+))[@:]/.exec(line);
    if (m && !pidAlive(Number(m[2]))) await ip('link', 'del', m[1]!).catch(() => undefined);
  }
}

/** `tf<pid><letter>`: the first letter no lab of this process uses yet. */
async function freePrefix(): Promise<string> {
  const { stdout: nsList } = await run('ip', ['netns', 'list']);
  const { stdout: links } = await run('ip', ['-o', 'link', 'show']);
  for (const letter of 'abcdefghijklmnopqrstuvwxyz') {
    const prefix = `tf${process.pid}${letter}`;
    if (!nsList.includes(`${prefix}h`) && !links.includes(`${prefix}br`)) return prefix;
  }
  throw new Error('netns: 26 labs in one process');
}

/** A /24 under 10.77.0.0/16 that no interface here uses yet (starting from one derived from the pid). */
async function freeSubnet(): Promise<number> {
  const { stdout } = await run('ip', ['-o', '-4', 'addr', 'show']);
  const used = new Set([...stdout.matchAll(/inet 10\.77\.(\d+)\./g)].map((m) => Number(m[1])));
  for (let i = 0; i < 250; i++) {
    const n = (process.pid + i) % 250;
    if (!used.has(n)) return n;
  }
  throw new Error('netns: no free /24 under 10.77.0.0/16');
}

export async function createNetnsLab(o: { hosts: number }): Promise<NetnsLab> {
  if (o.hosts < 1 || o.hosts > 200) throw new Error(`netns: ${o.hosts} hosts is out of range`);
  await sweepLeftovers();
  const prefix = await freePrefix();
  const subnet = await freeSubnet();
  const bridge = `${prefix}br`;
  const rootAddress = `10.77.${subnet}.1`;
  const ns = (h: number): string => `${prefix}h${h}`;
  const address = (h: number): string => `10.77.${subnet}.${h + 2}`;
  const rootVeth = (h: number): string => `${prefix}v${h}`;
  const hostVeth = (h: number): string => `${prefix}p${h}`;
  const made = { bridge: false, hosts: [] as number[] };
  const pairCuts = new Set<string>();
  const hostCuts = new Set<number>();
  /** Rules cutHostFrom added (host, rule), removed by healAll. */
  const hostRules: Array<[number, string[]]> = [];
  let removed = false;

  const removeSync = (): void => {
    if (removed) return;
    removed = true;
    for (const h of made.hosts) {
      try {
        const pids = execFileSync('ip', ['netns', 'pids', ns(h)], { encoding: 'utf8' }).split(/\s+/).filter(Boolean);
        for (const pid of pids) process.kill(Number(pid), 'SIGKILL');
      } catch { /* nothing inside */ }
      try { execFileSync('ip', ['link', 'del', rootVeth(h)], { stdio: 'ignore' }); } catch { /* already gone */ }
      try { execFileSync('ip', ['netns', 'del', ns(h)], { stdio: 'ignore' }); } catch { /* already gone */ }
    }
    if (made.bridge) try { execFileSync('ip', ['link', 'del', bridge], { stdio: 'ignore' }); } catch { /* already gone */ }
  };
  process.once('exit', removeSync);

  const iptables = (h: number, ...args: string[]): Promise<unknown> => run('ip', ['netns', 'exec', ns(h), 'iptables', '-w', ...args]);
  const pairRules = (a: number, b: number): Array<[number, string[]]> => [
    [a, ['INPUT', '-s', address(b), '-j', 'DROP']],
    [a, ['OUTPUT', '-d', address(b), '-j', 'DROP']],
    [b, ['INPUT', '-s', address(a), '-j', 'DROP']],
    [b, ['OUTPUT', '-d', address(a), '-j', 'DROP']],
  ];

  const lab: NetnsLab = {
    prefix,
    rootAddress,
    hostCount: o.hosts,
    ns,
    address,
    execPrefix: (h) => ['ip', 'netns', 'exec', ns(h)],
    async cutHost(h) {
      await ip('link', 'set', rootVeth(h), 'down');
      hostCuts.add(h);
    },
    async healHost(h) {
      await ip('link', 'set', rootVeth(h), 'up');
      hostCuts.delete(h);
    },
    async cutPair(a, b) {
      if (!hasCommand('iptables')) throw new Error('netns: cutPair needs iptables (scripts/system-deps.sh installs it)');
      for (const [h, rule] of pairRules(a, b)) await iptables(h, '-A', ...rule);
      pairCuts.add(`${a},${b}`);
    },
    async healPair(a, b) {
      for (const [h, rule] of pairRules(a, b)) await iptables(h, '-D', ...rule).catch(() => undefined);
      pairCuts.delete(`${a},${b}`);
    },
    async cutHostFrom(h, from) {
      if (!hasCommand('iptables')) throw new Error('netns: cutHostFrom needs iptables (scripts/system-deps.sh installs it)');
      const rules: string[][] = [];
      for (const b of from.hosts) rules.push(['INPUT', '-s', address(b), '-j', 'DROP'], ['OUTPUT', '-d', address(b), '-j', 'DROP']);
      for (const port of from.rootPorts) {
        rules.push(['INPUT', '-s', rootAddress, '-p', 'tcp', '--sport', String(port), '-j', 'DROP'], ['OUTPUT', '-d', rootAddress, '-p', 'tcp', '--dport', String(port), '-j', 'DROP']);
      }
      for (const rule of rules) {
        await iptables(h, '-A', ...rule);
        hostRules.push([h, rule]);
      }
    },
    async healAll() {
      for (const [h, rule] of hostRules.splice(0)) await iptables(h, '-D', ...rule).catch(() => undefined);
      for (const h of [...hostCuts]) await lab.healHost(h);
      for (const key of [...pairCuts]) {
        const [a, b] = key.split(',').map(Number) as [number, number];
        await lab.healPair(a, b);
      }
    },
    async remove() {
      if (removed) return;
      removed = true;
      process.removeListener('exit', removeSync);
      for (const h of made.hosts) {
        await killInside(ns(h));
        await ip('link', 'del', rootVeth(h)).catch(() => undefined);
        await ip('netns', 'del', ns(h)).catch(() => undefined);
      }
      if (made.bridge) await ip('link', 'del', bridge).catch(() => undefined);
    },
  };

  try {
    await ip('link', 'add', bridge, 'type', 'bridge');
    made.bridge = true;
    await ip('addr', 'add', `${rootAddress}/24`, 'dev', bridge);
    await ip('link', 'set', bridge, 'up');
    for (let h = 0; h < o.hosts; h++) {
      await ip('netns', 'add', ns(h));
      made.hosts.push(h);
      await ip('link', 'add', rootVeth(h), 'type', 'veth', 'peer', 'name', hostVeth(h));
      await ip('link', 'set', hostVeth(h), 'netns', ns(h));
      await ip('link', 'set', rootVeth(h), 'master', bridge, 'up');
      await ip('-n', ns(h), 'addr', 'add', `${address(h)}/24`, 'dev', hostVeth(h));
      await ip('-n', ns(h), 'link', 'set', hostVeth(h), 'up');
      await ip('-n', ns(h), 'link', 'set', 'lo', 'up');
    }
  } catch (err) {
    await lab.remove();
    throw err;
  }
  return lab;
}
