/**
 * GET responses in flight per client, and the refusal of one more than the
 * limit (limits.s3GetsInflightPerClientMax; the gateway's
 * getsInflightPerClientMax). A GetObject that streams from the cluster
 * (everything but an empty or inline object) takes a slot before it reads
 * any data and gives it back when its response ends (chunk-body.ts: written,
 * cut, failed, or its connection closed, pipelined responses included).
 * Over the limit the answer is 503 SlowDown, which S3 SDKs retry with
 * backoff. Without it one client opening many connections and reading them
 * slowly holds most of the striper's read budget and leaves every other
 * client one piece at a time (docs/s3-api.md, "GET responses in flight per client").
 *
 * The client is the access key of a signed request (header or presigned),
 * else the remote address (anonymous requests). Counts are per gateway
 * process. Invariant: an entry exists only while its count is above zero, so
 * the map holds at most one entry per response in flight.
 */
import { assert } from '../../src/lib/assert.js';
import type { AuthResult } from './auth/index.js';
import { s3Error } from './errors.js';

export interface ClientGetsStats {
  /** Clients with at least one GET response in flight (entries in the map). */
  clients: number;
  /** GET responses in flight, all clients together. */
  inflight: number;
  /** GETs refused SlowDown since the gateway started. */
  refusedTotal: number;
}

export class ClientGets {
  private readonly counts = new Map<string, number>();
  private inflight = 0;
  private refusedTotal = 0;

  constructor(readonly perClientMax: number) {
    if (!Number.isSafeInteger(perClientMax) || perClientMax < 1) throw new Error(`ClientGets: perClientMax ${perClientMax} is not a positive integer`);
  }

  /** Takes one of `client`'s slots, or throws SlowDown (503). The function returned gives it back; calls after the first do nothing. */
  take(client: string): () => void {
    const held = this.counts.get(client) ?? 0;
    if (held >= this.perClientMax) {
      this.refusedTotal++;
      throw s3Error('SlowDown', `Too many GET responses in flight for this client (at most ${this.perClientMax}); please retry.`);
    }
    this.counts.set(client, held + 1);
    this.inflight++;
    let given = false;
    return () => {
      if (given) return;
      given = true;
      const left = (this.counts.get(client) ?? 0) - 1;
      assert(left >= 0, `ClientGets: ${client} gave back a slot it did not hold`);
      if (left === 0) this.counts.delete(client);
      else this.counts.set(client, left);
      this.inflight--;
    };
  }

  stats(): ClientGetsStats {
    return { clients: this.counts.size, inflight: this.inflight, refusedTotal: this.refusedTotal };
  }
}

/** Who a request counts against: its access key when signed, else its remote address. */
export function clientOf(auth: AuthResult, remote: string): string {
  return auth.kind === 'signed' ? `key:${auth.accessKeyId}` : `addr:${remote}`;
}
