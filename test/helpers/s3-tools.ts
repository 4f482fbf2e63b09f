/**
 * Real S3 client programs for tests (the aws CLI, rclone, s3cmd): finding
 * them (a missing tool makes its tests skip LOUDLY, never pass silently),
 * running them with their configuration in temporary files (nothing from
 * the user's home, no credentials from the environment, no network beyond
 * 127.0.0.1), and directory trees of known content to sync and compare.
 */
import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import type { Rng } from './random.js';

export interface Tool {
  path: string;
  version: string;
}

/** The first candidate that answers its version command, or null with why none did. */
export function findTool(candidates: readonly string[], versionArgs: readonly string[]): { tool: Tool | null; why: string } {
  const failures: string[] = [];
  for (const path of candidates) {
    try {
      const version = execFileSync(path, versionArgs, { encoding: 'utf8', timeout: 30_000, stdio: ['ignore', 'pipe', 'pipe'] }).split('\n')[0]!.trim();
      return { tool: { path, version }, why: '' };
    } catch (err) {
      failures.push(`${path}: ${(err as Error).message.split('\n')[0]}`);
    }
  }
  return { tool: null, why: failures.join('; ') };
}

/** Every distinct installation of the aws CLI: Debian's package (scripts/system-deps.sh) first, then whatever PATH finds. */
export function findAwsClis(): { tools: Tool[]; why: string } {
  const tools: Tool[] = [];
  const whys: string[] = [];
  for (const candidate of ['/usr/bin/aws', 'aws']) {
    const { tool, why } = findTool([candidate], ['--version']);
    if (tool && !tools.some((t) => t.version === tool.version)) tools.push(tool);
    if (!tool) whys.push(why);
  }
  return { tools, why: whys.join('; ') };
}

/** Says loudly that a test does not run and why: a skipped tool test must never look like a pass. */
export function warnSkipped(what: string, why: string, hint = 'install it (scripts/system-deps.sh, as root) to run these tests'): void {
  console.warn(`\n*** SKIPPED: ${what}: ${why}; ${hint}. ***\n`);
}

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a program; rejects with its output when it exits non-zero (unless allowFailure). */
export function runTool(path: string, args: readonly string[], o: { env: NodeJS.ProcessEnv; input?: Buffer; timeoutMs?: number; allowFailure?: boolean; cwd?: string }): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      path,
      args,
      { env: o.env, timeout: o.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024, encoding: 'buffer', ...(o.cwd ? { cwd: o.cwd } : {}) },
      (err, stdout, stderr) => {
        const result = { code: err ? ((err as { code?: number }).code ?? -1) : 0, stdout: stdout.toString('utf8'), stderr: stderr.toString('utf8') };
        if (err && !o.allowFailure) reject(new Error(`${path} ${args.join(' ')} failed (${err.message.split('\n')[0]}):\n${result.stderr.slice(-4000)}\n${result.stdout.slice(-2000)}`));
        else resolve(result);
      },
    );
    child.stdin!.end(o.input);
  });
}

/** The environment of a tool run: this process's, without any AWS or rclone settings, plus `extra`. */
export function cleanEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(AWS_|RCLONE_|S3CMD)/.test(k)) env[k] = v;
  // No instance metadata lookups (they would leave 127.0.0.1), no pager.
  return { ...env, AWS_EC2_METADATA_DISABLED: 'true', AWS_PAGER: '', NO_PROXY: '127.0.0.1,localhost', ...extra };
}

export interface S3Endpoint {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
}

/** The aws CLI configured for an endpoint through files in dir (AWS_CONFIG_FILE, AWS_SHARED_CREDENTIALS_FILE). */
export async function awsCli(tool: Tool, target: S3Endpoint, dir: string): Promise<(args: string[], o?: { input?: Buffer; allowFailure?: boolean }) => Promise<RunResult>> {
  await mkdir(dir, { recursive: true });
  const config = join(dir, 'config');
  const credentials = join(dir, 'credentials');
  // Single PUTs up to 64 MB (multipart has its own tests), path-style addressing.
  await writeFile(config, '[default]\nregion = us-east-1\noutput = json\ns3 =\n    addressing_style = path\n    multipart_threshold = 64MB\n    max_concurrent_requests = 16\n');
  await writeFile(credentials, `[default]\naws_access_key_id = ${target.accessKeyId}\naws_secret_access_key = ${target.secretAccessKey}\n`, { mode: 0o600 });
  const env = cleanEnv({ AWS_CONFIG_FILE: config, AWS_SHARED_CREDENTIALS_FILE: credentials });
  return (args, o = {}) => runTool(tool.path, ['--endpoint-url', target.endpoint, ...args], { env, ...o });
}

/** A tree of `files` files of known content under dir (sizes mostly small, names with spaces and unicode); returns path -> sha256. */
export async function writeTree(dir: string, rng: Rng, o: { files: number; bigFiles?: number }): Promise<Map<string, string>> {
  const names = ['a', 'b c', 'ü', 'ключ', 'x+y=z', 'dots.in.name', '✓'];
  const out = new Map<string, string>();
  for (let i = 0; i < o.files; i++) {
    const depth = rng.int(4);
    const parts: string[] = [];
    for (let d = 0; d < depth; d++) parts.push(`${rng.pick(names)}${rng.int(4)}`);
    parts.push(`f${i} ${rng.pick(names)}.bin`);
    const big = i < (o.bigFiles ?? 0);
    const size = big ? 256 * 1024 + rng.int(2 * 1024 * 1024) : rng.int(10) === 0 ? 0 : rng.int(8 * 1024);
    await put(dir, parts.join('/'), rng.bytes(size), out);
  }
  return out;
}

async function put(dir: string, rel: string, data: Buffer, digests: Map<string, string>): Promise<void> {
  const path = join(dir, rel);
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, data);
  digests.set(rel, sha256(data));
}

export async function writeFileIn(dir: string, rel: string, data: Buffer, digests: Map<string, string>): Promise<void> {
  await put(dir, rel, data, digests);
}

export const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

/** path (relative to dir, "/"-separated) -> sha256 of every regular file under dir. */
export async function treeDigest(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (at: string): Promise<void> => {
    for (const entry of await readdir(at, { withFileTypes: true })) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile()) out.set(relative(dir, path), sha256(await readFile(path)));
    }
  };
  await walk(dir);
  return out;
}

/** Sorted [path, digest] pairs, for a readable comparison. */
export const sortedEntries = (m: Map<string, string>): Array<[string, string]> => [...m.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
