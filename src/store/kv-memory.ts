/**
 * An in-memory KvStore that behaves like a disk with a volatile write cache:
 * unsynced writes are visible but lost by crash(); a synced write makes it
 * and every write before it durable (as RocksDB's ordered WAL does). For the
 * seeded simulation and for tests of crash recovery; the same conformance
 * suite runs against it and RocksDB.
 */
import { TesseraError } from '../lib/errors.js';
import type { KvOp, KvRange, KvStore } from './kv.js';

type Entries = Map<string, Buffer>;

function compareKeys(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The "disk": survives crashes; open() returns a KvStore over it. */
export class MemoryKvDisk {
  private durable: Entries = new Map();
  private current: Entries = new Map();
  private session = 0;

  /** Drops every write since the last synced one; handles opened before fail from now on. */
  crash(): void {
    this.current = new Map(this.durable);
    this.session++;
  }

  open(): KvStore {
    return new MemoryKv(this, this.session);
  }

  /** @internal */
  state(session: number): { current: Entries; sync: () => void } {
    if (session !== this.session) throw new TesseraError('Closed', 'memory kv: this handle died in a crash');
    return {
      current: this.current,
      sync: () => {
        this.durable = new Map(this.current);
      },
    };
  }
}

class MemoryKv implements KvStore {
  private closed = false;

  constructor(
    private readonly disk: MemoryKvDisk,
    private readonly session: number,
  ) {}

  private state() {
    if (this.closed) throw new TesseraError('Closed', 'memory kv is closed');
    return this.disk.state(this.session);
  }

  async get(key: Buffer): Promise<Buffer | undefined> {
    return this.state().current.get(key.toString('latin1'));
  }

  async getMany(keys: readonly Buffer[]): Promise<Array<Buffer | undefined>> {
    const { current } = this.state();
    return keys.map((k) => current.get(k.toString('latin1')));
  }

  async write(ops: readonly KvOp[], options: { sync: boolean }): Promise<void> {
    const s = this.state();
    for (const op of ops) {
      if (op.type === 'put') s.current.set(op.key.toString('latin1'), Buffer.from(op.value));
      else s.current.delete(op.key.toString('latin1'));
    }
    if (options.sync) s.sync();
  }

  async scan(range: KvRange): Promise<Array<[Buffer, Buffer]>> {
    const { current } = this.state();
    const lo = range.gte ?? range.gt;
    const hi = range.lte ?? range.lt;
    const loS = lo?.toString('latin1');
    const hiS = hi?.toString('latin1');
    const keys = [...current.keys()]
      .filter((k) => {
        if (loS !== undefined && (range.gte ? k < loS : k <= loS)) return false;
        if (hiS !== undefined && (range.lte ? k > hiS : k >= hiS)) return false;
        return true;
      })
      .sort(compareKeys);
    if (range.reverse) keys.reverse();
    return keys.slice(0, range.limit).map((k) => [Buffer.from(k, 'latin1'), current.get(k)!]);
  }

  async approximateSizeBytes(): Promise<number> {
    let n = 0;
    for (const [k, v] of this.state().current) n += k.length + v.length;
    return n;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
