/**
 * One owner per map directory, without kernel locks (Node has no flock()).
 * The lock is a chain of generation files `LOCK.<n>`, each created
 * exclusively (O_EXCL) and holding its owner's identity: pid plus an
 * incarnation (the kernel's boot id and the process's start time, from
 * /proc), so a reused pid, or the same pid after a reboot, is not mistaken
 * for the owner. The owner is the creator of the highest generation, as long
 * as it lives and has not released it.
 *
 * - Acquire: read the highest generation g. A live, unreleased owner: Locked.
 *   Otherwise (dead after kill -9, released by close, or none: g = 0) create
 *   LOCK.<g+1> exclusively. O_EXCL lets exactly one of any number of racing
 *   openers have generation g+1; the others start over, find it live and
 *   fail Locked. The winner checks that no higher generation exists (its view
 *   could be stale) and deletes the older generations.
 * - A file that stays empty or unparsable for incompleteGraceMs (its creator
 *   died between create and write) counts as stale.
 * - Release (close) rewrites the owner's file as released; the file stays, so
 *   generations only grow and a stale view can never win an old number.
 * - Before every write the owner checks (`verify`) that its file is still the
 *   highest generation and holds its token; if not, it fails Locked and
 *   writes nothing (fencing, should a stalled owner ever be passed over).
 *
 * Bounds: at most acquireAttemptsMax rounds, each with bounded sleeps.
 */
import { dirname, join } from 'node:path';
import type { Io } from '../src/io/io.js';
import { assert } from '../src/lib/assert.js';
import { TesseraError } from '../src/lib/errors.js';

export interface ProcessIdentity {
  pid: number;
  /** Tells this process from an earlier one with the same pid; '' when the platform cannot say. */
  incarnation: string;
}

/** Who is this process, and does a given pid still run (as which incarnation)? */
export interface ProcessProbe {
  self(): Promise<ProcessIdentity>;
  /** null when no live process has this pid (zombies count as gone). */
  lookup(pid: number): Promise<ProcessIdentity | null>;
}

const errnoOf = (err: unknown): string | undefined => (err as NodeJS.ErrnoException | null)?.code;

async function readText(io: Pick<Io, 'fs'>, path: string): Promise<string | null> {
  try {
    return (await io.fs.readFile(path)).toString('utf8');
  } catch (err) {
    if (errnoOf(err) === 'ENOENT' || errnoOf(err) === 'ESRCH') return null;
    throw err;
  }
}

/** Fields of /proc/<pid>/stat after the command name (which may contain spaces and parentheses). */
function statFields(text: string): string[] {
  return text.slice(text.lastIndexOf(')') + 2).trim().split(' ');
}

/** The real probe: /proc on Linux (through io.fs); elsewhere process.kill(pid, 0), without incarnations. */
export function systemProcessProbe(io: Pick<Io, 'fs'>): ProcessProbe {
  const identity = async (pid: number | 'self'): Promise<ProcessIdentity | null> => {
    const stat = await readText(io, `/proc/${pid}/stat`);
    if (stat === null) return null;
    const fields = statFields(stat);
    // fields[0] is the state (field 3 of stat), fields[19] the start time in clock ticks (field 22).
    if (fields[0] === 'Z' || fields[0] === 'X') return null;
    const bootId = ((await readText(io, '/proc/sys/kernel/random/boot_id')) ?? '').trim();
    return { pid: Number(stat.slice(0, stat.indexOf(' '))), incarnation: `${bootId}/${fields[19] ?? ''}` };
  };
  const hasProc = async (): Promise<boolean> => (await io.fs.stat('/proc/self/stat')) !== null;
  return {
    async self() {
      if (await hasProc()) {
        const me = await identity('self');
        assert(me !== null, 'this process is in /proc');
        return me;
      }
      return { pid: process.pid, incarnation: '' };
    },
    async lookup(pid) {
      if (!Number.isSafeInteger(pid) || pid <= 0) return null; // from a file: never signal a process group
      if (await hasProc()) return identity(pid);
      try {
        process.kill(pid, 0);
        return { pid, incarnation: '' };
      } catch (err) {
        return errnoOf(err) === 'EPERM' ? { pid, incarnation: '' } : null;
      }
    },
  };
}

interface LockRecord extends ProcessIdentity {
  token: string;
  acquiredAtMs: number;
  /** Set by release(): the generation is free to be succeeded. */
  released?: boolean;
}

function parseRecord(text: string): LockRecord | null {
  try {
    const r = JSON.parse(text) as Partial<LockRecord> | null;
    const ok = typeof r?.pid === 'number' && typeof r.incarnation === 'string' && typeof r.token === 'string' && typeof r.acquiredAtMs === 'number';
    return ok ? (r as LockRecord) : null;
  } catch {
    return null;
  }
}

export interface DirectoryLockOptions {
  io: Io;
  /** The directory the lock files live in. */
  dir: string;
  probe: ProcessProbe;
  /** For messages: what the lock protects. */
  what: string;
  /** Default 8. */
  acquireAttemptsMax?: number;
  /** How long an empty or unparsable lock file may stay so before it counts as stale. Default 200. */
  incompleteGraceMs?: number;
}

const lockFilePattern = /^LOCK\.([0-9]{1,15})$/;
export const lockFileName = (generation: number): string => `LOCK.${generation}`;

/** Generations present in dir, ascending. */
async function generations(io: Io, dir: string): Promise<number[]> {
  const found: number[] = [];
  for (const name of await io.fs.readdir(dir)) {
    const match = lockFilePattern.exec(name);
    if (match) found.push(Number(match[1]));
  }
  return found.sort((a, b) => a - b);
}

export class DirectoryLock {
  private released = false;

  private constructor(
    private readonly options: DirectoryLockOptions,
    private readonly record: LockRecord,
    readonly generation: number,
  ) {}

  private get path(): string {
    return join(this.options.dir, lockFileName(this.generation));
  }

  /** Takes the lock, succeeding a stale or released owner; Locked when a live process holds it. */
  static async acquire(options: DirectoryLockOptions): Promise<DirectoryLock> {
    const { io } = options;
    const me = await options.probe.self();
    const record: LockRecord = { ...me, token: io.random.bytes(12).toString('hex'), acquiredAtMs: io.clock.nowMs() };
    const attemptsMax = options.acquireAttemptsMax ?? 8;
    let unparsable: string | null = null;
    for (let attempt = 0; attempt < attemptsMax; attempt++) {
      const top = (await generations(io, options.dir)).at(-1) ?? 0;
      if (top > 0) {
        const text = await readText(io, join(options.dir, lockFileName(top)));
        if (text === null) continue; // superseded meanwhile: look again
        const holder = parseRecord(text);
        if (holder === null && `${top}:${text}` !== unparsable) {
          // Possibly being written right now: look again after the grace period.
          unparsable = `${top}:${text}`;
          await io.clock.sleep(options.incompleteGraceMs ?? 200);
          continue;
        }
        if (holder !== null && holder.released !== true && (await isAlive(options.probe, holder))) {
          throw new TesseraError('Locked', `${options.what} is in use by process ${holder.pid} (lock file ${lockFileName(top)})`);
        }
      }
      const lock = new DirectoryLock(options, record, top + 1);
      if (!(await tryCreate(io, lock.path, record))) continue; // another opener took this generation
      if (await lock.settle()) return lock;
    }
    throw new TesseraError('Locked', `${options.what}: could not take its lock after ${attemptsMax} attempts (other processes are opening it)`);
  }

  /** After creating our generation: true if it is the highest (older ones then deleted); else it is withdrawn. */
  private async settle(): Promise<boolean> {
    const { io, dir } = this.options;
    const all = await generations(io, dir);
    if (all.at(-1) !== this.generation) {
      await removeIfPresent(io, this.path);
      return false;
    }
    for (const g of all) if (g < this.generation) await removeIfPresent(io, join(dir, lockFileName(g)));
    return true;
  }

  /** Fails Locked unless this owner's generation is still the highest and holds its token. */
  async verify(): Promise<void> {
    const { io, dir, what } = this.options;
    if (this.released) throw new TesseraError('Locked', `${what}: lock released`);
    const text = await readText(io, this.path);
    const mine = text === null ? null : parseRecord(text);
    const top = (await generations(io, dir)).at(-1);
    if (mine?.token !== this.record.token || mine.released === true || top !== this.generation) {
      throw new TesseraError('Locked', `${what}: lost its lock ${lockFileName(this.generation)} (highest generation now ${top ?? 'none'})`);
    }
  }

  /** Marks the generation released if it is still ours. Idempotent. */
  async release(): Promise<void> {
    if (this.released) return;
    try {
      await this.verify();
    } catch {
      this.released = true;
      return;
    }
    this.released = true;
    await this.options.io.fs.writeFileAtomic(this.path, Buffer.from(`${JSON.stringify({ ...this.record, released: true })}\n`));
  }
}

async function isAlive(probe: ProcessProbe, holder: ProcessIdentity): Promise<boolean> {
  const now = await probe.lookup(holder.pid);
  if (now === null) return false;
  return now.incarnation === '' || holder.incarnation === '' || now.incarnation === holder.incarnation;
}

async function removeIfPresent(io: Io, path: string): Promise<void> {
  try {
    await io.fs.unlink(path);
  } catch (err) {
    if (errnoOf(err) !== 'ENOENT') throw err;
  }
}

/** Creates path exclusively holding our record; false if it exists. */
async function tryCreate(io: Io, path: string, record: LockRecord): Promise<boolean> {
  let file;
  try {
    file = await io.fs.open(path, 'createExclusive');
  } catch (err) {
    if (errnoOf(err) === 'EEXIST') return false;
    throw err;
  }
  try {
    await file.writev([Buffer.from(`${JSON.stringify(record)}\n`)], 0);
    await file.datasync();
  } finally {
    await file.close();
  }
  await io.fs.syncDir(dirname(path));
  return true;
}
