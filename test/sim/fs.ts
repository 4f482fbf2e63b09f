/**
 * A simulated disk: an in-memory FileSystem (src/io/io.ts) whose volatile
 * state is lost by crash(), as in a power loss.
 *
 * - File contents: a write is visible at once but durable only after a
 *   datasync of the file, or at once on a file opened with syncWrites
 *   (O_DSYNC). crash() keeps each unsynced write or loses it, independently
 *   (the page cache writes back in any order), and a kept one may be torn at
 *   a 512-byte sector boundary; truncates are unsynced too.
 * - Directory entries (create, rename, unlink) are durable once the
 *   directory is synced (syncDir); crash() takes every directory back to its
 *   last synced entries. Simplification: mkdir is durable at once (ext4
 *   commits it with the next journal commit; nothing in Tessera syncs a
 *   parent after mkdir, and a lost store directory would be an artefact).
 * - Each operation completes after a seeded delay, as an event owned by the
 *   calling process: a process that dies meanwhile never sees it complete,
 *   and its effect is lost (a write the kernel never got).
 *
 * readdir lists entries in a seeded order (a real directory's order is its
 * own). Errors carry node's codes (ENOENT, EEXIST, ENOTDIR, EISDIR, ENOTEMPTY).
 */
import { posix } from 'node:path';
import type { FileIo, FileStat, FileSystem, FsStat, OpenMode } from '../../src/io/io.js';
import type { Rng } from '../helpers/random.js';
import { never, type Scheduler, type SimProcess } from './scheduler.js';

const SECTOR_BYTES = 512;

type PendingOp = { type: 'write'; positionBytes: number; data: Buffer } | { type: 'truncate'; sizeBytes: number };

class Bytes {
  buf = Buffer.alloc(0);
  size = 0;
  write(position: number, data: Uint8Array): void {
    const end = position + data.byteLength;
    this.reserve(end);
    if (position > this.size) this.buf.fill(0, this.size, position);
    this.buf.set(data, position);
    this.size = Math.max(this.size, end);
  }
  truncate(size: number): void {
    if (size > this.size) {
      this.reserve(size);
      this.buf.fill(0, this.size, size);
    }
    this.size = size;
  }
  copy(): Bytes {
    const b = new Bytes();
    b.buf = Buffer.from(this.buf.subarray(0, this.size));
    b.size = this.size;
    return b;
  }
  private reserve(n: number): void {
    if (n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(n, this.buf.length * 2, 4096));
    this.buf.copy(next, 0, 0, this.size);
    this.buf = next;
  }
}

class Inode {
  current = new Bytes();
  durable = new Bytes();
  pending: PendingOp[] = [];
  sync(): void {
    for (const op of this.pending) apply(this.durable, op);
    this.pending = [];
  }
}

function apply(b: Bytes, op: PendingOp): void {
  if (op.type === 'write') b.write(op.positionBytes, op.data);
  else b.truncate(op.sizeBytes);
}

class Dir {
  entries = new Map<string, Inode | Dir>();
  durable = new Map<string, Inode | Dir>();
}

function fsError(code: string, syscall: string, path: string): Error {
  const err = new Error(`${code}: simulated ${syscall} '${path}'`) as NodeJS.ErrnoException;
  err.code = code;
  err.syscall = syscall;
  err.path = path;
  return err;
}

export interface SimDiskOptions {
  capacityBytes: number;
  /** Chance that crash() keeps an unsynced write (default 0.5). */
  keepUnsyncedProbability?: number;
  /** A disk that lies: syncWrites (O_DSYNC) writes are not made durable. Only to show the checks catch lost writes. */
  ignoreSyncWrites?: boolean;
}

export class SimDisk {
  private root = new Dir();
  private readonly inflight = new Set<{ owner: SimProcess; ifAbandoned: () => void }>();
  crashes = 0;

  constructor(
    readonly name: string,
    private readonly sched: Scheduler,
    /** @internal */
    readonly rng: Rng,
    private readonly options: SimDiskOptions,
  ) {}

  /** Power loss: unsynced file writes and unsynced directory entries are lost (seeded: some writes survive, maybe torn). */
  crash(): { writesKept: number; writesLost: number } {
    this.crashes++;
    const p = this.options.keepUnsyncedProbability ?? 0.5;
    let writesKept = 0;
    let writesLost = 0;
    const seen = new Set<Inode>();
    const visit = (d: Dir): void => {
      d.entries = new Map(d.durable);
      for (const name of [...d.entries.keys()].sort()) {
        const n = d.entries.get(name)!;
        if (n instanceof Dir) {
          visit(n);
          continue;
        }
        if (seen.has(n)) continue;
        seen.add(n);
        for (const op of n.pending) {
          if (this.rng.float() >= p) {
            writesLost++;
            continue;
          }
          writesKept++;
          if (op.type === 'write' && op.data.length > SECTOR_BYTES && this.rng.float() < 0.2) {
            const sectors = Math.floor(op.data.length / SECTOR_BYTES);
            apply(n.durable, { ...op, data: op.data.subarray(0, SECTOR_BYTES * this.rng.int(sectors + 1)) });
          } else apply(n.durable, op);
        }
        n.pending = [];
        n.current = n.durable.copy();
      }
    };
    visit(this.root);
    return { writesKept, writesLost };
  }

  get liesAboutSync(): boolean {
    return this.options.ignoreSyncWrites === true;
  }

  usedBytes(): number {
    let n = 0;
    const seen = new Set<Inode>();
    const visit = (d: Dir): void => {
      for (const e of d.entries.values()) {
        if (e instanceof Dir) visit(e);
        else if (!seen.has(e)) {
          seen.add(e);
          n += e.current.size;
        }
      }
    };
    visit(this.root);
    return n;
  }

  /** The FileSystem seen by one process (its operations die with it). */
  view(owner: SimProcess): FileSystem {
    return new SimFs(this, owner);
  }

  /**
   * @internal Completes an operation after a seeded delay, as an event of the owner. `ifAbandoned` is
   * what the operation leaves behind when its process dies first (the kernel may have done it or not).
   */
  later<T>(owner: SimProcess, fn: () => T | PromiseLike<T>, kind: 'read' | 'write' | 'sync' = 'read', ifAbandoned?: () => void): Promise<T> {
    if (!owner.alive) return never();
    const base = kind === 'sync' ? 0.5 : kind === 'write' ? 0.05 : 0.02;
    const delayMs = base + this.rng.float() * base * 4;
    const entry = ifAbandoned ? { owner, ifAbandoned } : null;
    if (entry) this.inflight.add(entry);
    return new Promise<T>((resolve, reject) => {
      this.sched.schedule(
        delayMs,
        () => {
          if (entry) this.inflight.delete(entry);
          try {
            resolve(fn());
          } catch (err) {
            reject(err);
          }
        },
        owner,
      );
    });
  }

  /**
   * The process died: each change it had in flight happened or not (seeded, half the time), and if it
   * happened it is not durable (a power loss right after may lose it: crash()).
   */
  abandon(owner: SimProcess): { applied: number; dropped: number } {
    let applied = 0;
    let dropped = 0;
    for (const e of [...this.inflight]) {
      if (e.owner !== owner) continue;
      this.inflight.delete(e);
      if (this.rng.float() < 0.5) {
        dropped++;
        continue;
      }
      applied++;
      try {
        e.ifAbandoned();
      } catch {
        // It would have failed (the file was gone, say): nothing happened.
      }
    }
    return { applied, dropped };
  }

  /** @internal */
  lookup(path: string, syscall: string): { dir: Dir; name: string; node: Inode | Dir | undefined } {
    const parts = posix.resolve('/', path).split('/').filter(Boolean);
    let dir = this.root;
    for (let i = 0; i < parts.length - 1; i++) {
      const next = dir.entries.get(parts[i]!);
      if (!next) throw fsError('ENOENT', syscall, path);
      if (!(next instanceof Dir)) throw fsError('ENOTDIR', syscall, path);
      dir = next;
    }
    if (parts.length === 0) return { dir: this.root, name: '', node: this.root };
    const name = parts[parts.length - 1]!;
    return { dir, name, node: dir.entries.get(name) };
  }

  /** @internal */
  mkdirp(path: string): void {
    const parts = posix.resolve('/', path).split('/').filter(Boolean);
    let dir = this.root;
    for (const part of parts) {
      let next = dir.entries.get(part);
      if (!next) {
        next = new Dir();
        dir.entries.set(part, next);
        dir.durable.set(part, next);
      }
      if (!(next instanceof Dir)) throw fsError('EEXIST', 'mkdir', path);
      dir = next;
    }
  }

  capacity(): FsStat {
    const used = this.usedBytes();
    return { totalBytes: this.options.capacityBytes, freeBytes: Math.max(0, this.options.capacityBytes - used) };
  }
}

class SimFile implements FileIo {
  private closed = false;
  constructor(
    private readonly disk: SimDisk,
    private readonly owner: SimProcess,
    private readonly inode: Inode,
    private readonly syncWrites: boolean,
    private readonly path: string,
  ) {}

  private check(syscall: string): void {
    if (this.closed) throw fsError('EBADF', syscall, this.path);
  }

  read(buffer: Uint8Array, offsetInBuffer: number, lengthBytes: number, positionBytes: number): Promise<number> {
    return this.disk.later(this.owner, () => {
      this.check('read');
      const b = this.inode.current;
      const n = Math.max(0, Math.min(lengthBytes, b.size - positionBytes));
      if (n > 0) buffer.set(b.buf.subarray(positionBytes, positionBytes + n), offsetInBuffer);
      return n;
    });
  }

  writev(buffers: readonly Uint8Array[], positionBytes: number): Promise<void> {
    // The bytes are taken when the call is made (the caller may reuse its buffers once it resolves).
    const data = Buffer.concat(buffers.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)));
    const op: PendingOp = { type: 'write', positionBytes, data };
    const unsynced = (): void => {
      apply(this.inode.current, op);
      this.inode.pending.push(op);
    };
    return this.disk.later(
      this.owner,
      () => {
        this.check('writev');
        unsynced();
        if (this.syncWrites && !this.disk.liesAboutSync) this.inode.sync();
      },
      this.syncWrites ? 'sync' : 'write',
      unsynced,
    );
  }

  datasync(): Promise<void> {
    return this.disk.later(
      this.owner,
      () => {
        this.check('fdatasync');
        this.inode.sync();
      },
      'sync',
    );
  }

  truncate(sizeBytes: number): Promise<void> {
    const truncate = (): void => {
      const op: PendingOp = { type: 'truncate', sizeBytes };
      apply(this.inode.current, op);
      this.inode.pending.push(op);
    };
    return this.disk.later(
      this.owner,
      () => {
        this.check('ftruncate');
        truncate();
      },
      'write',
      truncate,
    );
  }

  sizeBytes(): Promise<number> {
    return this.disk.later(this.owner, () => {
      this.check('fstat');
      return this.inode.current.size;
    });
  }

  close(): Promise<void> {
    return this.disk.later(this.owner, () => {
      this.check('close');
      this.closed = true;
    });
  }
}

class SimFs implements FileSystem {
  constructor(
    private readonly disk: SimDisk,
    private readonly owner: SimProcess,
  ) {}

  open(path: string, mode: OpenMode, options?: { syncWrites?: boolean }): Promise<FileIo> {
    return this.disk.later(this.owner, () => {
      const { dir, name, node } = this.disk.lookup(path, 'open');
      if (node instanceof Dir) throw fsError('EISDIR', 'open', path);
      if (node && mode === 'createExclusive') throw fsError('EEXIST', 'open', path);
      let inode = node;
      if (!inode) {
        if (mode === 'read' || mode === 'readWrite') throw fsError('ENOENT', 'open', path);
        inode = new Inode();
        dir.entries.set(name, inode);
      }
      return new SimFile(this.disk, this.owner, inode, options?.syncWrites === true, path);
    });
  }

  readFile(path: string): Promise<Buffer> {
    return this.disk.later(this.owner, () => {
      const { node } = this.disk.lookup(path, 'open');
      if (!node) throw fsError('ENOENT', 'open', path);
      if (node instanceof Dir) throw fsError('EISDIR', 'read', path);
      return Buffer.from(node.current.buf.subarray(0, node.current.size));
    });
  }

  writeFileAtomic(path: string, data: Uint8Array): Promise<void> {
    const copy = Buffer.from(data);
    const effect = (): void => {
      // temp file, fsync, rename, fsync of the directory: all durable when it resolves.
      const { dir, name } = this.disk.lookup(path, 'open');
      const inode = new Inode();
      inode.current.write(0, copy);
      inode.durable.write(0, copy);
      dir.entries.set(name, inode);
      dir.durable = new Map(dir.entries);
    };
    return this.disk.later(this.owner, effect, 'sync', effect);
  }

  mkdir(path: string): Promise<void> {
    return this.disk.later(this.owner, () => this.disk.mkdirp(path), 'write', () => this.disk.mkdirp(path));
  }

  readdir(path: string): Promise<string[]> {
    return this.disk.later(this.owner, () => {
      const { node } = this.disk.lookup(path, 'scandir');
      if (!node) throw fsError('ENOENT', 'scandir', path);
      if (!(node instanceof Dir)) throw fsError('ENOTDIR', 'scandir', path);
      // In no particular order, as a real directory (ext4 returns hash order): seeded.
      const names = [...node.entries.keys()].sort();
      for (let i = names.length - 1; i > 0; i--) {
        const j = this.disk.rng.int(i + 1);
        [names[i], names[j]] = [names[j]!, names[i]!];
      }
      return names;
    });
  }

  rename(fromPath: string, toPath: string): Promise<void> {
    const effect = (): void => {
      const from = this.disk.lookup(fromPath, 'rename');
      if (!from.node) throw fsError('ENOENT', 'rename', fromPath);
      const to = this.disk.lookup(toPath, 'rename');
      if (to.node instanceof Dir && to.node.entries.size > 0) throw fsError('ENOTEMPTY', 'rename', toPath);
      from.dir.entries.delete(from.name);
      to.dir.entries.set(to.name, from.node);
    };
    return this.disk.later(this.owner, effect, 'write', effect);
  }

  unlink(path: string): Promise<void> {
    const effect = (): void => {
      const { dir, name, node } = this.disk.lookup(path, 'unlink');
      if (!node) throw fsError('ENOENT', 'unlink', path);
      if (node instanceof Dir) throw fsError('EISDIR', 'unlink', path);
      dir.entries.delete(name);
    };
    return this.disk.later(this.owner, effect, 'write', effect);
  }

  rmrf(path: string): Promise<void> {
    const effect = (): void => {
      try {
        const { dir, name, node } = this.disk.lookup(path, 'rm');
        if (node && name !== '') dir.entries.delete(name);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT' && (err as NodeJS.ErrnoException).code !== 'ENOTDIR') throw err;
      }
    };
    return this.disk.later(this.owner, effect, 'write', effect);
  }

  stat(path: string): Promise<FileStat | null> {
    return this.disk.later(this.owner, () => {
      let node: Inode | Dir | undefined;
      try {
        node = this.disk.lookup(path, 'stat').node;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw err;
      }
      if (!node) return null;
      return node instanceof Dir ? { sizeBytes: 4096, isDirectory: true, isFile: false } : { sizeBytes: node.current.size, isDirectory: false, isFile: true };
    });
  }

  statfs(_path: string): Promise<FsStat> {
    return this.disk.later(this.owner, () => this.disk.capacity());
  }

  syncDir(path: string): Promise<void> {
    return this.disk.later(
      this.owner,
      () => {
        const { node } = this.disk.lookup(path, 'open');
        if (!node) throw fsError('ENOENT', 'open', path);
        if (!(node instanceof Dir)) throw fsError('ENOTDIR', 'fsync', path);
        node.durable = new Map(node.entries);
      },
      'sync',
    );
  }
}
