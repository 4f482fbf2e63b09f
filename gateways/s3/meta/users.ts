/**
 * S3 users and their access keys, kept in the cluster's metadata pool: the
 * omap of object "s3.users" maps a user id (64 hex, the canonical id S3
 * returns as Owner) to the user; "s3.keys" maps an access key id to its
 * secret and user. Secrets never leave this module except to the signature
 * check, and are never logged. Key lookups are cached for keyCacheMs (a
 * removed key stops working within that time).
 */
import type { Io } from '../../../src/io/io.js';
import { TesseraError } from '../../../src/lib/errors.js';
import type { TesseraClient } from '../../../src/client/client.js';
import { OmapRecords } from './omap-record.js';

export interface S3User {
  userId: string;
  displayName: string;
  email: string;
  createdMs: number;
  accessKeyIds: string[];
}

export interface AccessKey {
  accessKeyId: string;
  secretAccessKey: string;
  userId: string;
  createdMs: number;
}

const ACCESS_KEY_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
const KEY_CACHE_ENTRIES_MAX = 10_000;

export class UserStore {
  private readonly users: OmapRecords<S3User>;
  private readonly keys: OmapRecords<AccessKey>;
  private readonly keyCache = new Map<string, { key: AccessKey | null; atMs: number }>();

  constructor(
    private readonly io: Io,
    client: TesseraClient,
    pool: string,
    private readonly keyCacheMs = 5000,
  ) {
    this.users = new OmapRecords(client, pool, 's3.users');
    this.keys = new OmapRecords(client, pool, 's3.keys');
  }

  async create(o: { displayName: string; email?: string; userId?: string }): Promise<S3User> {
    const userId = o.userId ?? this.io.random.bytes(32).toString('hex');
    if (!/^[0-9a-f]{64}$/.test(userId)) throw new TesseraError('InvalidArgument', 'a user id is 64 lowercase hex digits');
    if (!o.displayName || o.displayName.length > 128) throw new TesseraError('InvalidArgument', 'a display name is 1 to 128 characters');
    const user: S3User = { userId, displayName: o.displayName, email: o.email ?? '', createdMs: this.io.clock.nowMs(), accessKeyIds: [] };
    await this.users.update(userId, (current) => {
      if (current) throw new TesseraError('AlreadyExists', `user ${userId} exists`);
      return user;
    });
    return user;
  }

  get(userId: string): Promise<S3User | null> {
    return this.users.get(userId);
  }

  async list(): Promise<S3User[]> {
    const out: S3User[] = [];
    for await (const [, u] of this.users.list()) out.push(u);
    return out;
  }

  /** Adds an access key: generated, or given (users migrating from another S3 system keep theirs). */
  async addKey(userId: string, given?: { accessKeyId: string; secretAccessKey: string }): Promise<AccessKey> {
    if (!(await this.users.get(userId))) throw new TesseraError('NotFound', `user ${userId} does not exist`);
    const accessKeyId = given?.accessKeyId ?? this.generateAccessKeyId();
    const secretAccessKey = given?.secretAccessKey ?? this.io.random.bytes(30).toString('base64').replace(/[+/]/g, 'x');
    if (!/^[A-Za-z0-9]{16,128}$/.test(accessKeyId)) throw new TesseraError('InvalidArgument', 'an access key id is 16 to 128 letters and digits');
    if (secretAccessKey.length < 16 || secretAccessKey.length > 128) throw new TesseraError('InvalidArgument', 'a secret key is 16 to 128 characters');
    const key: AccessKey = { accessKeyId, secretAccessKey, userId, createdMs: this.io.clock.nowMs() };
    await this.keys.update(accessKeyId, (current) => {
      if (current) throw new TesseraError('AlreadyExists', `access key ${accessKeyId} exists`);
      return key;
    });
    await this.users.update(userId, (u) => (u ? { ...u, accessKeyIds: [...u.accessKeyIds, accessKeyId] } : undefined));
    this.keyCache.delete(accessKeyId);
    return key;
  }

  async removeKey(accessKeyId: string): Promise<void> {
    const key = await this.keys.get(accessKeyId);
    if (!key) throw new TesseraError('NotFound', `access key ${accessKeyId} does not exist`);
    await this.keys.update(accessKeyId, () => null);
    await this.users.update(key.userId, (u) => (u ? { ...u, accessKeyIds: u.accessKeyIds.filter((k) => k !== accessKeyId) } : undefined));
    this.keyCache.delete(accessKeyId);
  }

  async remove(userId: string): Promise<void> {
    const user = await this.users.get(userId);
    if (!user) throw new TesseraError('NotFound', `user ${userId} does not exist`);
    for (const k of user.accessKeyIds) await this.removeKey(k).catch(() => undefined);
    await this.users.update(userId, () => null);
  }

  /** The secret and owner of an access key, for the signature check. */
  async lookupKey(accessKeyId: string): Promise<{ secretAccessKey: string; userId: string } | null> {
    const now = this.io.clock.monotonicMs();
    const cached = this.keyCache.get(accessKeyId);
    let key: AccessKey | null;
    if (cached && now - cached.atMs < this.keyCacheMs) key = cached.key;
    else {
      key = await this.keys.get(accessKeyId);
      if (this.keyCache.size >= KEY_CACHE_ENTRIES_MAX) this.keyCache.clear();
      this.keyCache.set(accessKeyId, { key, atMs: now });
    }
    return key ? { secretAccessKey: key.secretAccessKey, userId: key.userId } : null;
  }

  private generateAccessKeyId(): string {
    const bytes = this.io.random.bytes(20);
    let id = 'TK';
    for (let i = 0; i < 18; i++) id += ACCESS_KEY_ALPHABET[bytes[i]! % 32];
    return id;
  }
}
