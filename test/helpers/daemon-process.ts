/**
 * Starts real storage daemon processes (`tessera daemon`, from dist/) for
 * tests, and stops them by PID: gently (SIGTERM) or with kill -9.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

// From the sources (vitest) the binary is in dist/; compiled (bench/recovery.ts imports these helpers) this file is in dist/test/helpers.
export const tesseraBin = fileURLToPath(new URL(import.meta.url.includes('/dist/test/') ? '../../src/bin/tessera.js' : '../../dist/src/bin/tessera.js', import.meta.url));

export interface DaemonProcess {
  port: number;
  /** The Prometheus endpoint's port, when started with --metrics. */
  metricsPort?: number;
  pid: number;
  child: ChildProcess;
  /** SIGTERM, then wait for a clean exit; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** kill -9, then wait for the process to be gone. */
  kill(): Promise<void>;
  stderr(): string;
}

const running = new Set<DaemonProcess>();

export async function startDaemonProcess(o: { diskPath: string; port?: number; clusterId?: string; diskId?: number; map?: string; capacityBytes?: number; extraArgs?: string[] }): Promise<DaemonProcess> {
  if (!existsSync(tesseraBin)) throw new Error(`${tesseraBin} is missing: run npm run build first`);
  const args = [tesseraBin, 'daemon', '--disk', o.diskPath, '--listen', `127.0.0.1:${o.port ?? 0}`];
  if (o.clusterId !== undefined) args.push('--cluster-id', o.clusterId, '--disk-id', String(o.diskId ?? 0));
  if (o.map !== undefined) args.push('--map', o.map);
  if (o.capacityBytes !== undefined) args.push('--capacity-bytes', String(o.capacityBytes));
  if (o.extraArgs) args.push(...o.extraArgs);
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const { port, metricsPort } = await new Promise<{ port: number; metricsPort?: number }>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.includes('"listening"')) resolve(JSON.parse(line) as { port: number; metricsPort?: number });
    });
    void exited.then((code) => reject(new Error(`daemon exited (${code}) before listening: ${stderr}`)));
  });
  const d: DaemonProcess = {
    port,
    ...(metricsPort !== undefined ? { metricsPort } : {}),
    pid: child.pid!,
    child,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const code = await exited;
      running.delete(d);
      return code;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
      running.delete(d);
    },
    stderr: () => stderr,
  };
  running.add(d);
  return d;
}

/** For afterAll/afterEach: kills whatever a failed test left running. */
export async function killAllDaemons(): Promise<void> {
  await Promise.all([...running].map((d) => d.kill()));
}

/** Runs the tessera command against a map daemon (`--map 127.0.0.1:PORT` appended) and collects its output. */
export function runTessera(args: string[], mapPort: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [tesseraBin, ...args, '--map', `127.0.0.1:${mapPort}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}
