/**
 * test/helpers/netns.ts on a real kernel: hosts reach each other and the
 * root namespace over the bridge; a pair cut drops exactly that pair's
 * traffic and heals; a host cut isolates the host and heals; remove() leaves
 * no namespace or link behind. Then a cluster with a daemon per namespace:
 * each daemon advertises in the map the address it listens on (its host's),
 * and a client in the root namespace writes and reads through them.
 * Skips loudly where namespaces cannot be made (not root, no CAP_NET_ADMIN).
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createNetnsLab, netnsSupport, type NetnsLab, type NetnsSupport } from './helpers/netns.js';
import { startFaultCluster, type FaultCluster } from './helpers/fault-cluster.js';

const run = promisify(execFile);
const support: NetnsSupport = await netnsSupport();
if (!support.ok) console.warn(`SKIPPED: test/netns.test.ts: network namespaces unavailable: ${support.reason}`);

/** A TCP server inside host h's namespace that answers "hi" (killed by the returned function). */
async function serveIn(lab: NetnsLab, h: number, port: number): Promise<() => void> {
  const script = `require('net').createServer((s) => s.end('hi')).listen(${port}, '${lab.address(h)}', () => console.log('ready'))`;
  const child = spawn(lab.execPrefix(h)[0]!, [...lab.execPrefix(h).slice(1), process.execPath, '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    child.stdout!.once('data', () => resolve());
    child.once('exit', (code) => reject(new Error(`server in host ${h} exited (${code})`)));
  });
  return () => child.kill('SIGKILL');
}

/** Whether a TCP connection from host `from` (or the root namespace: -1) to `address:port` gets "hi" within timeoutMs. */
async function reaches(lab: NetnsLab, from: number, address: string, port: number, timeoutMs = 1500): Promise<boolean> {
  const script = `const s = require('net').connect(${port}, '${address}'); s.setTimeout(${timeoutMs}, () => process.exit(1)); s.on('data', () => process.exit(0)); s.on('error', () => process.exit(1));`;
  const argv = [...(from >= 0 ? lab.execPrefix(from) : []), process.execPath, '-e', script];
  return run(argv[0]!, argv.slice(1)).then(
    () => true,
    () => false,
  );
}

describe.skipIf(!support.ok)('network namespaces as hosts', () => {
  let lab: NetnsLab;
  const stops: Array<() => void> = [];
  beforeAll(async () => {
    lab = await createNetnsLab({ hosts: 3 });
    for (let h = 0; h < 3; h++) stops.push(await serveIn(lab, h, 7000));
  }, 30_000);
  afterAll(async () => {
    stops.forEach((s) => s());
    await lab?.remove();
  });

  it('connects hosts and the root namespace; cuts and heals a pair and a host', async () => {
    expect(await reaches(lab, 0, lab.address(1), 7000)).toBe(true);
    expect(await reaches(lab, -1, lab.address(2), 7000)).toBe(true);
    if (support.pairCuts) {
      await lab.cutPair(0, 1);
      expect(await reaches(lab, 0, lab.address(1), 7000), 'cut pair 0 -> 1').toBe(false);
      expect(await reaches(lab, 1, lab.address(0), 7000), 'cut pair 1 -> 0').toBe(false);
      expect(await reaches(lab, 0, lab.address(2), 7000), 'uncut pair 0 -> 2').toBe(true);
      await lab.healPair(0, 1);
      expect(await reaches(lab, 0, lab.address(1), 7000), 'healed pair').toBe(true);
    } else {
      console.warn('SKIPPED: pair cuts: iptables is not installed (scripts/system-deps.sh installs it)');
    }
    await lab.cutHost(2);
    expect(await reaches(lab, -1, lab.address(2), 7000), 'cut host from root').toBe(false);
    expect(await reaches(lab, 0, lab.address(2), 7000), 'cut host from host 0').toBe(false);
    await lab.healAll();
    expect(await reaches(lab, 0, lab.address(2), 7000), 'healed host').toBe(true);
  }, 60_000);

  it('removes every namespace and link it made', async () => {
    const other = await createNetnsLab({ hosts: 2 });
    const listed = async (): Promise<string> => (await run('ip', ['netns', 'list'])).stdout + (await run('ip', ['-o', 'link', 'show'])).stdout;
    expect(await listed()).toContain(other.ns(1));
    await other.remove();
    expect((await listed()).split('\n').filter((l) => l.includes(other.prefix))).toEqual([]);
  }, 30_000);
});

describe.skipIf(!support.ok)('daemons in namespaces', () => {
  let lab: NetnsLab;
  let cluster: FaultCluster;
  beforeAll(async () => {
    lab = await createNetnsLab({ hosts: 2 });
    cluster = await startFaultCluster({
      hosts: 2,
      disksPerHost: 1,
      lab,
      pools: [{ name: 'rep', redundancy: { type: 'replicated', size: 2, minSize: 1 }, failureDomain: 'host', pgCount: 4 }],
    });
  }, 60_000);
  afterAll(async () => {
    await cluster?.stop();
    await lab?.remove();
  });

  it('advertises the address each daemon listens on, inside its host', async () => {
    const map = await cluster.map.service.current();
    for (const d of map.disks) {
      expect(d.up, `disk ${d.id} up`).toBe(true);
      expect(d.address.startsWith(`${lab.address(cluster.hostOf(d.id))}:`), `disk ${d.id} at ${d.address}`).toBe(true);
    }
    expect(cluster.mapAddress.startsWith(`${lab.rootAddress}:`)).toBe(true);
    const data = Buffer.from('through the bridge');
    await cluster.client.put('rep', 'x', data);
    expect((await cluster.client.read('rep', 'x')).equals(data)).toBe(true);
  }, 60_000);
});
