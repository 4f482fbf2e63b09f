/**
 * `tessera user ...`: S3 users and their access keys, kept in the cluster
 * (gateways/s3/meta/users.ts: the metadata pool's "s3.users" and "s3.keys").
 * The cluster is the one named by --map HOST:PORT, or by the client file of
 * --data DIR (default ./tessera-data). Secrets are printed once, when a key
 * is created, and never logged; `user ls` shows access key ids only. A removed
 * key stops working within the gateway's key cache time (5 s).
 *
 * Also what `tessera up` uses to make sure its admin user exists
 * (ensureS3User: idempotent, so a crash between steps is harmless).
 */
import { resolve as resolvePath } from 'node:path';
import type { Io } from '../io/io.js';
import { isTesseraError, TesseraError } from '../lib/errors.js';
import { TesseraClient } from '../client/client.js';
import { connectMapService } from '../../cluster/map-daemon.js';
import { UserStore, type S3User } from '../../gateways/s3/meta/users.js';
import { BucketStore } from '../../gateways/s3/meta/buckets.js';
import { clientPath, mapAddressesOf, readJson, type ClientFile, type S3Credentials } from './cluster-files.js';

const CLIENT_TIMEOUT_MS = 30_000;
const ACCESS_KEY_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export interface ClusterTarget {
  io: Io;
  /** Data directory of `tessera up` (its client.json names the map service). */
  dataDir?: string;
  /** "host:port" of the map service (instead of --data). */
  map?: string;
  /** Metadata pool of the S3 gateway (default: the client file's, else "rep"). */
  metaPool?: string;
}

export interface UserSession {
  users: UserStore;
  buckets: BucketStore;
  close(): Promise<void>;
}

/** Connects to the cluster a command names and opens its S3 user store. */
export async function openUsers(t: ClusterTarget): Promise<UserSession> {
  let map = t.map;
  let metaPool = t.metaPool;
  if (map === undefined) {
    const dataDir = resolvePath(t.dataDir ?? 'tessera-data');
    const file = await readJson<ClientFile>(t.io, clientPath(dataDir));
    if (!file) throw new Error(`no cluster in ${dataDir} (give --data DIR of a running \`tessera up\`, or --map HOST:PORT)`);
    map = mapAddressesOf(file);
    metaPool ??= file.s3?.metaPool;
  }
  const conn = connectMapService(t.io, map);
  let client: TesseraClient;
  try {
    client = await TesseraClient.connect({ io: t.io, mapService: conn.service, timeoutMs: CLIENT_TIMEOUT_MS });
  } catch (err) {
    await conn.close();
    throw err;
  }
  return {
    users: new UserStore(t.io, client, metaPool ?? 'rep', 0),
    buckets: new BucketStore(t.io, client, metaPool ?? 'rep'),
    async close() {
      await client.close();
      await conn.close();
    },
  };
}

/** Fresh admin credentials, in the formats UserStore generates (TK + 18 base32 characters; 40-character secret). */
export function generateCredentials(io: Io, displayName: string): S3Credentials {
  const bytes = io.random.bytes(18);
  let accessKeyId = 'TK';
  for (const b of bytes) accessKeyId += ACCESS_KEY_ALPHABET[b % 32];
  return {
    userId: io.random.bytes(32).toString('hex'),
    displayName,
    accessKeyId,
    secretAccessKey: io.random.bytes(30).toString('base64').replace(/[+/]/g, 'x'),
  };
}

/** Makes sure the user and its key exist as given; 'created' if anything had to be written. */
export async function ensureS3User(users: UserStore, c: S3Credentials): Promise<'created' | 'existing'> {
  let created = false;
  if (!(await users.get(c.userId))) {
    await users.create({ displayName: c.displayName, userId: c.userId });
    created = true;
  }
  const key = await users.lookupKey(c.accessKeyId);
  if (!key) {
    await users.addKey(c.userId, { accessKeyId: c.accessKeyId, secretAccessKey: c.secretAccessKey });
    created = true;
  } else if (key.userId !== c.userId || key.secretAccessKey !== c.secretAccessKey) {
    throw new TesseraError('Conflict', `access key ${c.accessKeyId} exists in the cluster with another owner or secret`);
  }
  return created ? 'created' : 'existing';
}

/** A user id, or a display name that exactly one user has. */
async function resolveUser(users: UserStore, idOrName: string): Promise<S3User> {
  if (/^[0-9a-f]{64}$/.test(idOrName)) {
    const user = await users.get(idOrName);
    if (user) return user;
  }
  const named = (await users.list()).filter((u) => u.displayName === idOrName);
  if (named.length === 1) return named[0]!;
  if (named.length > 1) throw new TesseraError('InvalidArgument', `${named.length} users are named ${idOrName}: give the user id`);
  throw new TesseraError('NotFound', `no user ${idOrName}`);
}

type Out = (text: string) => void;

/** A generated secret is shown once, here; a given one is not echoed. */
function printKey(out: Out, key: { accessKeyId: string; secretAccessKey: string }, given: boolean): void {
  out(`  access key: ${key.accessKeyId}\n  secret key: ${given ? '(as given)' : `${key.secretAccessKey}\n  (the secret key is shown only now)`}\n`);
}

export async function userCreate(s: UserSession, o: { name: string; email?: string; key?: { accessKeyId: string; secretAccessKey: string } }, out: Out): Promise<void> {
  const user = await s.users.create({ displayName: o.name, ...(o.email !== undefined ? { email: o.email } : {}) });
  let key;
  try {
    key = await s.users.addKey(user.userId, o.key);
  } catch (err) {
    await s.users.remove(user.userId).catch(() => undefined);
    throw err;
  }
  out(`user ${user.userId}\n  name:       ${user.displayName}\n  email:      ${user.email || '-'}\n`);
  printKey(out, key, o.key !== undefined);
}

export async function userList(s: UserSession, out: Out, json = false): Promise<void> {
  const users = (await s.users.list()).sort((a, b) => a.displayName.localeCompare(b.displayName) || a.userId.localeCompare(b.userId));
  if (json) return out(`${JSON.stringify(users.map((u) => ({ userId: u.userId, name: u.displayName, email: u.email || null, accessKeyIds: u.accessKeyIds })))}\n`);
  const rows = [['USER ID', 'NAME', 'EMAIL', 'ACCESS KEYS'], ...users.map((u) => [u.userId, u.displayName, u.email || '-', u.accessKeyIds.join(',') || '-'])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  out(rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n');
}

export async function userRemove(s: UserSession, idOrName: string, out: Out): Promise<void> {
  const user = await resolveUser(s.users, idOrName);
  const owned: string[] = [];
  for await (const b of s.buckets.listOwned(user.userId)) owned.push(b.name);
  if (owned.length > 0) throw new TesseraError('Conflict', `user ${user.displayName} owns ${owned.length} bucket(s) (${owned.slice(0, 5).join(', ')}${owned.length > 5 ? ', ...' : ''}): empty and delete them first`);
  await s.users.remove(user.userId);
  out(`user ${user.userId} (${user.displayName}) removed, with ${user.accessKeyIds.length} access key(s)\n`);
}

export async function userKeyAdd(s: UserSession, idOrName: string, given: { accessKeyId: string; secretAccessKey: string } | undefined, out: Out): Promise<void> {
  const user = await resolveUser(s.users, idOrName);
  const key = await s.users.addKey(user.userId, given);
  out(`access key added to user ${user.userId} (${user.displayName})\n`);
  printKey(out, key, given !== undefined);
}

export async function userKeyRemove(s: UserSession, accessKeyId: string, out: Out): Promise<void> {
  await s.users.removeKey(accessKeyId);
  out(`access key ${accessKeyId} removed\n`);
}

/** Runs one `tessera user` subcommand against the target cluster. */
export async function runUser(t: ClusterTarget, run: (s: UserSession) => Promise<void>): Promise<number> {
  const s = await openUsers(t);
  try {
    await run(s);
    return 0;
  } catch (err) {
    if (isTesseraError(err, 'NotFound') || isTesseraError(err, 'AlreadyExists') || isTesseraError(err, 'InvalidArgument') || isTesseraError(err, 'Conflict')) {
      process.stderr.write(`tessera user: ${err.message}\n`);
      return 1;
    }
    throw err;
  } finally {
    await s.close();
  }
}
