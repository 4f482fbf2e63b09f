/**
 * The seams through which Tessera reaches time, randomness, disks and the
 * network. Production code never calls Date.now(), setTimeout, Math.random,
 * node:fs or node:net directly: it takes an `Io` in its options. A seeded,
 * single-process simulation (test/sim, docs/testing.md "Simulation")
 * supplies simulated versions: a virtual clock, a seeded PRNG, a disk that
 * loses unsynced writes on crash, and a network that delays and partitions.
 *
 * RocksDB does its own file I/O; the store reaches it through the KvStore
 * interface (src/store/kv.ts), which the simulation replaces as a whole.
 */
import type { Duplex } from 'node:stream';

export interface TimerHandle {
  /** Opaque; only passed back to clearTimeout. */
  readonly __timer: unique symbol;
}

export interface Clock {
  /** Wall-clock milliseconds since the Unix epoch (for timestamps users see). */
  nowMs(): number;
  /** Monotonic milliseconds (for durations and timeouts). */
  monotonicMs(): number;
  setTimeout(callback: () => void, delayMs: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
  /** Resolves once work already queued (promise continuations, I/O callbacks) has run: lets a batch fill up. */
  yield(): Promise<void>;
  /** Resolves after delayMs; rejects with the signal's reason if aborted. */
  sleep(delayMs: number, signal?: AbortSignal): Promise<void>;
}

export interface Random {
  /** Uniform in [0, 1). */
  float(): number;
  /** Uniform integer in [0, bound). */
  int(bound: number): number;
  /** Fresh random bytes (identifiers, nonces). */
  bytes(lengthBytes: number): Buffer;
}

export interface FileStat {
  sizeBytes: number;
  isDirectory: boolean;
  isFile: boolean;
}

export interface FsStat {
  totalBytes: number;
  freeBytes: number;
}

/** An open file. Positions are explicit: there is no file cursor. */
export interface FileIo {
  read(buffer: Uint8Array, offsetInBuffer: number, lengthBytes: number, positionBytes: number): Promise<number>;
  /** Writes all buffers contiguously at positionBytes; resolves when every byte is written. */
  writev(buffers: readonly Uint8Array[], positionBytes: number): Promise<void>;
  /** Data (and the size it needs) reaches stable storage. */
  datasync(): Promise<void>;
  truncate(sizeBytes: number): Promise<void>;
  sizeBytes(): Promise<number>;
  close(): Promise<void>;
}

export type OpenMode =
  | 'read' // must exist, read only
  | 'readWrite' // must exist
  | 'create' // create or open, read/write
  | 'createExclusive'; // must not exist, read/write

export interface OpenOptions {
  /**
   * Every write reaches stable storage, with the size it needs, before it resolves (O_DSYNC: as if a
   * datasync followed it, in the same call: one thread-pool round trip per write instead of two).
   */
  syncWrites?: boolean;
}

export interface FileSystem {
  open(path: string, mode: OpenMode, options?: OpenOptions): Promise<FileIo>;
  readFile(path: string): Promise<Buffer>;
  /** Writes a file durably and atomically: temp file, fsync, rename, fsync of the directory. */
  writeFileAtomic(path: string, data: Uint8Array): Promise<void>;
  mkdir(path: string): Promise<void>;
  readdir(path: string): Promise<string[]>;
  rename(fromPath: string, toPath: string): Promise<void>;
  unlink(path: string): Promise<void>;
  rmrf(path: string): Promise<void>;
  /** null when the path does not exist. */
  stat(path: string): Promise<FileStat | null>;
  statfs(path: string): Promise<FsStat>;
  /** Makes directory entries (creates, renames, unlinks) durable. */
  syncDir(path: string): Promise<void>;
}

export interface Listener {
  readonly port: number;
  close(): Promise<void>;
}

/**
 * A reader that supplies the memory its connection's bytes are read into
 * (node:net's onread): the bytes of a large message can land in their final
 * buffer straight from the kernel instead of in a fresh chunk to be copied.
 */
export interface ReadInto {
  /** Where the next read lands, from its start (never empty); asked again after every read. */
  readBuffer(): Uint8Array;
  /** nread bytes (> 0) landed at the start of the last readBuffer(). */
  onRead(nread: number): void;
}

export interface Network {
  /**
   * Resolves with a connected byte stream (TCP_NODELAY set). With readInto,
   * received bytes go into the buffers it supplies and are reported to it
   * instead of being emitted as 'data' ('end', 'error' and 'close' as usual).
   */
  connect(options: { host: string; port: number; signal?: AbortSignal; readInto?: ReadInto }): Promise<Duplex>;
  listen(options: { host: string; port: number }, onConnection: (socket: Duplex) => void): Promise<Listener>;
}

export interface Io {
  clock: Clock;
  random: Random;
  fs: FileSystem;
  net: Network;
}
