/**
 * The real implementations of the src/io seams: node's clock, crypto
 * randomness, node:fs and node:net. Only src/bin (and tests) construct this.
 */
import { randomBytes, randomInt } from 'node:crypto';
import { constants as fsConstants, promises as fsp } from 'node:fs';
import { createServer, connect as netConnect, type Socket } from 'node:net';
import { dirname, basename, join } from 'node:path';
import { setTimeout as sleepTimeout } from 'node:timers/promises';
import type { Clock, FileIo, FileSystem, Io, Network, OpenMode, Random, TimerHandle } from './io.js';

export const systemClock: Clock = {
  nowMs: () => Date.now(),
  monotonicMs: () => performance.now(),
  setTimeout: (callback, delayMs) => setTimeout(callback, delayMs) as unknown as TimerHandle,
  clearTimeout: (handle) => clearTimeout(handle as unknown as NodeJS.Timeout),
  yield: () => new Promise<void>((resolve) => setImmediate(resolve)),
  sleep: async (delayMs, signal) => {
    await sleepTimeout(delayMs, undefined, signal ? { signal } : undefined);
  },
};

export const systemRandom: Random = {
  float: () => Math.random(),
  int: (bound) => randomInt(bound),
  bytes: (lengthBytes) => randomBytes(lengthBytes),
};

const openFlags: Record<OpenMode, number> = {
  read: fsConstants.O_RDONLY,
  readWrite: fsConstants.O_RDWR,
  create: fsConstants.O_RDWR | fsConstants.O_CREAT,
  createExclusive: fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_EXCL,
};

class SystemFile implements FileIo {
  constructor(private readonly handle: fsp.FileHandle) {}
  async read(buffer: Uint8Array, offsetInBuffer: number, lengthBytes: number, positionBytes: number): Promise<number> {
    let done = 0;
    while (done < lengthBytes) {
      const { bytesRead } = await this.handle.read(buffer, offsetInBuffer + done, lengthBytes - done, positionBytes + done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done;
  }
  async writev(buffers: readonly Uint8Array[], positionBytes: number): Promise<void> {
    let pending = buffers.filter((b) => b.byteLength > 0);
    let position = positionBytes;
    while (pending.length > 0) {
      // writev may write partially; continue from where it stopped.
      const { bytesWritten } = await this.handle.writev(pending as Uint8Array[], position);
      position += bytesWritten;
      let skip = bytesWritten;
      const rest: Uint8Array[] = [];
      for (const b of pending) {
        if (skip >= b.byteLength) {
          skip -= b.byteLength;
          continue;
        }
        rest.push(skip > 0 ? b.subarray(skip) : b);
        skip = 0;
      }
      pending = rest;
    }
  }
  datasync(): Promise<void> {
    return this.handle.datasync();
  }
  truncate(sizeBytes: number): Promise<void> {
    return this.handle.truncate(sizeBytes);
  }
  async sizeBytes(): Promise<number> {
    return (await this.handle.stat()).size;
  }
  close(): Promise<void> {
    return this.handle.close();
  }
}

export const systemFs: FileSystem = {
  async open(path, mode, options) {
    return new SystemFile(await fsp.open(path, openFlags[mode] | (options?.syncWrites ? fsConstants.O_DSYNC : 0), 0o600));
  },
  readFile: (path) => fsp.readFile(path),
  async writeFileAtomic(path, data) {
    const tmp = join(dirname(path), `.${basename(path)}.tmp`);
    const handle = await fsp.open(tmp, 'w', 0o600);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(tmp, path);
    await systemFs.syncDir(dirname(path));
  },
  async mkdir(path) {
    await fsp.mkdir(path, { recursive: true, mode: 0o700 });
  },
  readdir: (path) => fsp.readdir(path),
  rename: (fromPath, toPath) => fsp.rename(fromPath, toPath),
  unlink: (path) => fsp.unlink(path),
  rmrf: (path) => fsp.rm(path, { recursive: true, force: true }),
  async stat(path) {
    try {
      const s = await fsp.stat(path);
      return { sizeBytes: s.size, isDirectory: s.isDirectory(), isFile: s.isFile() };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  },
  async statfs(path) {
    const s = await fsp.statfs(path);
    return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
  },
  async syncDir(path) {
    const handle = await fsp.open(path, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  },
};

export const systemNet: Network = {
  connect({ host, port, signal, readInto }) {
    return new Promise((resolve, reject) => {
      const onread = readInto && {
        buffer: () => readInto.readBuffer(),
        callback: (nread: number) => {
          readInto.onRead(nread);
          return true;
        },
      };
      const socket: Socket = netConnect({ host, port, noDelay: true, ...(signal ? { signal } : {}), ...(onread ? { onread } : {}) });
      const onError = (err: Error): void => reject(err);
      socket.once('error', onError);
      socket.once('connect', () => {
        socket.off('error', onError);
        resolve(socket);
      });
    });
  },
  listen({ host, port }, onConnection) {
    return new Promise((resolve, reject) => {
      const server = createServer({ noDelay: true }, onConnection);
      server.once('error', reject);
      server.listen({ host, port }, () => {
        server.off('error', reject);
        const address = server.address();
        const boundPort = typeof address === 'object' && address ? address.port : port;
        resolve({
          port: boundPort,
          close: () =>
            new Promise<void>((res) => {
              server.close(() => res());
            }),
        });
      });
    });
  },
};

export function systemIo(): Io {
  return { clock: systemClock, random: systemRandom, fs: systemFs, net: systemNet };
}
