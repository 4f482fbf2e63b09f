/**
 * Every bound in Tessera, declared in one place (TigerBeetle's habit). Layers
 * take the subset they need through their options, defaulting to these values;
 * decoders check a length against its limit before they allocate.
 */
import { assert } from './assert.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const TiB = 1024 * 1024 * MiB;

export const limits = {
  // --- objects (src/store) ---
  /** Largest object a store holds. */
  objectSizeBytesMax: 128 * MiB,
  /** Object names are UTF-8; S3 keys (1024 B) plus a gateway prefix must fit. */
  objectNameBytesMax: 2048,
  xattrNameBytesMax: 256,
  xattrValueBytesMax: 64 * KiB,
  /** All xattrs of one object together (they live in the object's record). */
  xattrTotalBytesMax: 256 * KiB,
  xattrCountMax: 256,
  omapKeyBytesMax: 4 * KiB,
  omapValueBytesMax: 64 * KiB,
  /** Entries returned by one omap or object listing page. */
  listPageEntriesMax: 10_000,
  /** Operations in one store transaction. */
  txnOpsMax: 1024,
  /** Payload bytes in one store transaction (data of all its writes). */
  txnBytesMax: 128 * MiB + 1 * MiB,
  /** Omap keys one transaction may set or remove (ranges count their keys). */
  txnOmapKeysMax: 16_384,
  /** Bytes read in one read request. */
  readBytesMax: 128 * MiB,

  // --- store internals ---
  /**
   * Data of at most this size lives inline in RocksDB, not in a segment. Kept
   * small: measured (docs/store.md), 4 KiB objects commit faster as segment
   * appends plus small records than as 4 KiB RocksDB values.
   */
  inlineDataBytesMax: 512,
  /** A segment file is closed for appends at this size. */
  segmentBytesMax: 256 * MiB,
  /** A blob (one contiguous checksummed run of data) is at most this long. */
  blobBytesMax: 4 * MiB,
  /** Extents in one object record before the store rewrites the object's data contiguously. */
  extentsPerObjectMax: 256,
  /** Transactions and bytes one group commit takes from the queue. */
  groupCommitTxnsMax: 512,
  /** A group stops taking transactions at this many payload bytes (it always takes one). */
  groupCommitBytesMax: 64 * MiB,
  /** Transactions waiting for a group commit (backpressure beyond this). */
  commitQueueTxnsMax: 4096,
  commitQueueBytesMax: 512 * MiB,
  /** Object records cached in memory per store. */
  onodeCacheEntriesMax: 65_536,

  // --- rpc (src/rpc) ---
  /** A frame is header + payload; anything larger closes the connection. */
  frameBytesMax: 128 * MiB + 2 * MiB,
  frameHeaderBytesMax: 1 * MiB,
  /** Requests in flight on one connection, and in one daemon. */
  connectionInflightMax: 256,
  daemonInflightMax: 4096,
  /**
   * Listeners on one pg interval's abort signal (src/daemon/pg.ts): one per sub-write or repop in flight for the
   * pg, removed when its call settles. Node warns past 10; a pg's share of daemonInflightMax requests, each sent
   * to at most a few dozen members, stays far below this, so the warning still names a real leak.
   */
  pgIntervalListenersMax: 65_536,
  /** Payload bytes in flight in one daemon (requests being served). */
  daemonInflightBytesMax: 1024 * MiB,
  connectionsPerDaemonMax: 1024,
  rpcTimeoutMsDefault: 30_000,
  /** A primary's wait for one replica's repop (an ended interval aborts it sooner). */
  repopTimeoutMs: 30_000,
  /** Calls an rpc client holds waiting, beyond the connectionInflightMax it has in flight; beyond both a call fails Busy. */
  rpcQueueMax: 4096,
  /** Connection attempts plus sends of one call before it fails Unavailable (retries: idempotent calls only). */
  rpcAttemptsMax: 3,
  /** Reconnect backoff after a failed connect: doubles from min up to max (with jitter). */
  rpcReconnectBackoffMsMin: 10,
  rpcReconnectBackoffMsMax: 1_000,
  /** How long a closing rpc server waits for requests in flight before it closes their connections. */
  rpcDrainTimeoutMsDefault: 10_000,
  /** Message bytes an error reply carries (longer messages are cut). */
  rpcErrorMessageBytesMax: 4 * KiB,
  /**
   * Bytes of streamed read replies a storage daemon reads from disk ahead of
   * one connection's socket: pieces read before the reply's stream asks for
   * them, until the socket has written them (src/daemon/store-service.ts).
   */
  connectionReadAheadBytesMax: 8 * MiB,

  // --- erasure-coded pools (src/daemon/ec*.ts; docs/erasure-coding.md) ---
  /** Bytes of one shard per stripe (the stripe unit): a stripe holds k data chunks of this size. Part of the on-disk format. */
  ecStripeUnitBytes: 4 * KiB,
  /** Shard bytes a rebuild reads from each source per step (memory per object rebuilt: (k + targets) x this). */
  ecRecoverySliceBytes: 1 * MiB,
  /** Objects one pg's recovery rebuilds at once. */
  ecRecoveryObjectsInflightMax: 4,
  /** Shard bytes (data + parity) a primary's writes hold encoded at once; further writes wait. */
  ecWriteBytesInflightMax: 512 * MiB,
  /** Longest wait for an object lock, a commit's turn or a write buffer reservation before the request fails Busy (the client retries). */
  ecWaitMsMax: 30_000,
  /** Timeout of a primary's stage and commit messages to a member. */
  ecSubWriteTimeoutMs: 30_000,
  /** Longest wait of a peering query for the pg's writes in flight on the member (then Busy: peering retries). */
  peeringWriteDrainMsMax: 30_000,

  // --- cluster map and map service (cluster/) ---
  /** An encoded cluster map (file on disk, rpc payload); decoders check it before parsing. */
  mapBytesMax: 16 * MiB,
  /** Entries in each list of the map (sites, racks, hosts, disks, pools). */
  mapEntriesMax: 65_536,
  /** Site, rack, host and pool names, and the cluster id (UTF-8 bytes). */
  mapNameBytesMax: 128,
  /** A disk's "host:port" address. */
  mapAddressBytesMax: 300,
  /** Placement groups of one pool (a power of two). */
  poolPgCountMax: 65_536,
  /** Copies of a replicated pool. */
  poolReplicasMax: 16,
  /** Map epochs the embedded map store keeps on disk (the newest plus history for debugging). */
  mapHistoryEpochsKept: 16,
  /** Updates waiting for the embedded map store's writer; beyond this an update fails Busy. */
  mapUpdateQueueMax: 1024,
  /** Attempts of one read-edit-compare-and-set change before it fails Conflict. */
  mapChangeAttemptsMax: 64,
  /** Backoff between change attempts after a Conflict, and between failed watch polls: doubles from min to max, jittered. */
  mapRetryBackoffMsMin: 5,
  mapRetryBackoffMsMax: 2_000,
  /** Longest wait of one watch long-poll on the map server (the client asks for at most this). */
  mapWatchWaitMsMax: 60_000,
  mapWatchWaitMsDefault: 20_000,
  /** Long-polls one map server holds waiting at once; beyond this a poll fails Busy. */
  mapWatchWaitersMax: 4096,

  // --- failure detection, recovery, full disks (cluster/liveness.ts, src/daemon/recovery-throttle.ts) ---
  /** A disk whose daemon sent no heartbeat for this long is marked down (map daemon option downGraceMs). */
  livenessDownGraceMsDefault: 20_000,
  /** A disk down for this long is marked out: its pgs remap and recover elsewhere (map daemon option outIntervalMs). */
  livenessOutIntervalMsDefault: 600_000,
  /** How often a daemon heartbeats, unless the map daemon asks for another interval (it answers grace / 4 by default). */
  heartbeatIntervalMsDefault: 5_000,
  /** Bounds of the interval a map daemon may ask for. */
  heartbeatIntervalMsMin: 20,
  heartbeatIntervalMsMax: 60_000,
  /**
   * A primary's lease (cluster/liveness.ts, src/daemon/lease.ts): a heartbeat answered by the map daemon lets its
   * daemon serve clients until the heartbeat's send time + leaseMs, by default this fraction of downGraceMs. At most
   * leaseGraceRatioMax of it (the rest absorbs clock rate drift), and at least two heartbeat intervals long.
   */
  leaseGraceRatioDefault: 0.5,
  leaseGraceRatioMax: 0.75,
  /** Longest wait for one heartbeat's reply (shorter when the lease is: a later reply renews nothing). */
  heartbeatTimeoutMsMax: 5_000,
  /**
   * Heartbeats between pg peers (src/daemon/peer-heartbeats.ts, cluster/peer-reports.ts): a daemon pings the disks it
   * shares pgs with every heartbeat interval; one silent for peerGraceMs is reported to the map daemon, which stops
   * granting it leases (and marks it down once its last lease has ended) when reports come from minDownReporters
   * distinct hosts (Ceph's osd_heartbeat_grace 20 s, mon_osd_min_down_reporters 2). Map daemon options.
   */
  peerGraceMsDefault: 20_000,
  minDownReportersDefault: 2,
  /** Disks one daemon pings (the peers of its pgs plus those it reports): beyond this, the lowest ids are kept. */
  peerPingTargetsMax: 512,
  /** Disks one report names (a reporter's open reports); a longer list is refused (LimitExceeded). */
  peerReportTargetsMax: 512,
  /** A report lapses this many heartbeat intervals after its last refresh unless refreshed (reporters refresh every interval). */
  peerReportTtlIntervals: 4,
  /** Used / total of a disk at which it is near full (a warning in the map) and full (writes to its pgs are refused). */
  diskNearFullRatioDefault: 0.85,
  diskFullRatioDefault: 0.95,
  /** Recovery and backfill bytes a daemon pushes per second, as primary (token bucket; burst one second's worth). */
  recoveryBytesPerSecDefault: 200 * MiB,
  /** Objects a daemon copies for recovery and backfill at once, over all its pgs. */
  recoveryOpsInflightMaxDefault: 4,
  /** Background recovery copies (backfill while the pg serves I/O) a daemon runs at once while its client I/O is active. */
  recoveryOpsInflightBusyMaxDefault: 1,
  /** A daemon's client I/O counts as active this long after its last client request ended (recovery-throttle.ts). */
  recoveryClientRecentMs: 100,
  /**
   * A pg member missing at most this many objects is recovered before the pg goes active (I/O waits,
   * briefly); one missing more, or needing a backfill, is recovered while the pg serves I/O without it.
   */
  recoveryInlineObjectsMax: 32,
  /**
   * A replicated pg member left out of the acting set because its store had no room for recovery
   * (toofull, src/daemon/peering.ts): bringing it back is tried after min, doubling up to max, and at
   * once when the map shows a change of that disk (its space state, up, a restart).
   */
  tooFullRetryMsMin: 1_000,
  tooFullRetryMsMax: 30_000,

  // --- scrub (src/daemon/pg-scrub.ts; docs/operations.md, "Scrub") ---
  /** Data a member reads per second for a deep scrub of its copies (background and on demand). */
  scrubBytesPerSecDefault: 64 * MiB,
  /** How often a primary scrubs each of its pgs in the background (metadata), and deep-scrubs it (all data). */
  scrubIntervalMsDefault: 24 * 3600_000,
  deepScrubIntervalMsDefault: 7 * 24 * 3600_000,
  /** How often the background scheduler looks for a pg due; it scrubs one pg at a time. */
  scrubCheckIntervalMsDefault: 60_000,
  /** Objects of one pg a scrub compares (every member's map of the pg is held in memory). */
  scrubObjectsPerPgMax: 200_000,
  /** Objects in one scrub map page (a member's answer to one request). */
  scrubMapPageObjectsMax: 256,
  /** Inconsistencies one pg scrub reports (the count goes on past it). */
  scrubInconsistenciesReportedMax: 1000,
  /**
   * Inconsistencies a primary keeps per pg after its scrub, in memory and in the pg's scrub record on disk
   * (src/daemon/scrub-record.ts; `tessera pg inconsistent` lists them, and counts the rest: "N listed").
   */
  scrubInconsistenciesKeptMax: 100,
  /** Erasure-coded objects a daemon's read repair holds waiting (src/daemon/read-repairs.ts; more are dropped, left to scrub). */
  readRepairsQueuedMax: 64,

  // --- striper (src/client/striper*.ts; docs/striper.md) ---
  /** Largest striped object (S3's object limit). */
  striperObjectSizeBytesMax: 5 * TiB,
  /** Bounds and default of a striped object's piece size (each piece is one object). */
  striperPieceBytesMin: 64 * KiB,
  striperPieceBytesMax: 64 * MiB,
  striperPieceBytesDefault: 4 * MiB,
  /** Pieces one put writes (or one get reads ahead) at once. */
  striperConcurrencyMax: 64,
  striperConcurrencyDefault: 4,
  /** Piece bytes all puts and gets of one Striper hold at once (reserved before a piece is filled or fetched). */
  striperBufferBytesDefault: 256 * MiB,
  /**
   * Free read buffers (a piece plus its generation trailer each) one
   * Striper keeps for reuse by chunksAt (striper-buffers.ts): 16 x 4 MiB.
   * Buffers in use are bounded by the byte budget above, not by this.
   */
  striperPooledBuffersMax: 16,
  /**
   * An S3 GET response whose client takes nothing for this long (no chunk
   * written, no 'drain', nothing written on its connection) while the
   * response waits for it is cut, and its chunks' budget released
   * (gateways/s3/chunk-body.ts; the gateway's responseStallMs). Node's and
   * fastify's own socket timeouts are off by default, so without it a client
   * that stops reading holds a chunk and the read-ahead (about 16 MiB of the
   * budget above) for as long as it keeps the connection. A chunk is a piece
   * (4 MiB): a client must read at least 4 MiB per 120 s (about 35 KB/s).
   */
  s3ResponseStallMsMax: 120_000,
  /**
   * S3 GET responses streaming from the cluster that one client (access key,
   * else remote address) has in flight on one gateway; one more is refused
   * 503 SlowDown before it reads anything (gateways/s3/client-gets.ts; the
   * gateway's getsInflightPerClientMax, `tessera s3 --gets-per-client-max`).
   * From the budget above: a GET reads ahead `striperConcurrencyDefault`
   * pieces (4 x 4 MiB = 16 MiB, plus the chunk its socket is writing), so 16
   * of them fill the 256 MiB; 8 let one client hold at most half of it and
   * leave the other half to everybody else. Clients that run more parallel
   * GETs (the aws CLI's 10) queue for a slot (below).
   */
  s3GetsInflightPerClientMax: 8,
  /**
   * How long a GET over its client's limit waits for one of the client's
   * slots (first come, first served) before 503 SlowDown; MinIO's
   * requests_deadline is 10 s too. A client reading its responses keeps
   * slots turning over in well under that; one that does not keeps them
   * until the stall limit above, and its extra GETs are refused.
   */
  s3GetSlotWaitMsMax: 10_000,
  /** GETs of one client that may wait for a slot at once; one more is refused SlowDown at once (a waiter holds only its request). */
  s3GetSlotWaitersPerClientMax: 64,
  /** A striped object's attributes, encoded, live in one xattr of its manifest. */
  striperAttrsBytesMax: 64 * KiB,
  striperAttrCountMax: 128,
  /** Manifest compare-and-swap attempts of one put, remove or setAttrs before it fails Conflict. */
  striperCommitAttemptsMax: 16,
  /** Times a read re-opens an object whose pieces vanished (overwritten) before it gives up with Conflict. */
  striperReadAttemptsMax: 4,
  /** Manifest bytes an open() reads along with the metadata (small inline objects arrive in one round trip). */
  striperPrefetchBytesDefault: 64 * KiB,
  /** Largest range read() (the whole-buffer convenience) returns; get() streams any size. */
  striperReadWholeBytesMax: 1024 * MiB,
  /**
   * A writer's lease on its pending-registry entry: refreshed while it writes;
   * a writer whose lease ran out gives up before it commits. Must exceed twice
   * the client's call timeout (a commit started with half a lease left ends in time).
   */
  striperLeaseMsDefault: 10 * 60_000,
  /** The sweeper leaves entries younger than this (lease plus clock skew between hosts). */
  striperSweepGraceMsDefault: 60 * 60_000,
  /** Objects the pending registry of one pool is spread over (fixed: writers and sweepers must agree). */
  striperRegistryShards: 16,

  // --- S3 bucket indexes (gateways/s3/meta/bucket-index.ts; docs/s3-api.md, "Index shards") ---
  /**
   * Shard objects of a bucket's index: fixed per bucket at its creation (in
   * its record), new buckets get the gateway's `indexShards` (`tessera s3
   * --index-shards`). Records written before the field mean 8. More shards
   * spread a bucket's writes over more objects; every listing reads all of them.
   */
  s3IndexShardsMin: 1,
  s3IndexShardsMax: 1024,
  s3IndexShardsDefault: 8,
  /**
   * Index entries one listing page holds across all shards (each shard is read
   * at most this / shards entries at a time, never fewer than one, never
   * more than the page + 1): the same 8008 as before for 8 shards. An entry
   * with an inline 4 KiB object (base64) and metadata is about 6 KiB, so
   * about 48 MiB per listing page when every entry holds one.
   */
  s3IndexListEntriesMax: 8192,
  /** Shard objects one listing (or a bucket deletion) reads or removes at once. */
  s3IndexShardCallsInflightMax: 32,
} as const;

export type Limits = typeof limits;

assert(limits.inlineDataBytesMax < limits.blobBytesMax, 'inline data is smaller than a blob');
assert(limits.blobBytesMax <= limits.segmentBytesMax, 'a blob fits in a segment');
assert(limits.objectSizeBytesMax <= limits.txnBytesMax, 'a whole object fits in one transaction');
assert(limits.txnBytesMax < limits.frameBytesMax, 'a transaction fits in one frame');
assert(limits.readBytesMax < limits.frameBytesMax, 'a read reply fits in one frame');
assert(limits.commitQueueBytesMax >= limits.txnBytesMax, 'the queue holds the largest transaction');
assert(limits.connectionInflightMax <= limits.daemonInflightMax, 'per-connection limit is below the daemon limit');
assert(limits.frameHeaderBytesMax <= limits.frameBytesMax, 'a frame header fits in a frame');
assert(limits.rpcErrorMessageBytesMax + 4 <= limits.frameHeaderBytesMax, 'an error reply fits in a frame header');
assert(limits.rpcReconnectBackoffMsMin <= limits.rpcReconnectBackoffMsMax, 'backoff range is ordered');
assert(limits.mapBytesMax < limits.frameBytesMax, 'an encoded map fits in one frame payload');
assert(limits.mapRetryBackoffMsMin <= limits.mapRetryBackoffMsMax, 'map backoff range is ordered');
assert(limits.tooFullRetryMsMin > 0 && limits.tooFullRetryMsMin <= limits.tooFullRetryMsMax, 'toofull retry range is ordered');
assert(limits.mapWatchWaitMsDefault <= limits.mapWatchWaitMsMax, 'the default watch wait is allowed');
assert(limits.mapHistoryEpochsKept >= 1, 'the map store keeps at least the newest epoch');
assert((limits.ecStripeUnitBytes & (limits.ecStripeUnitBytes - 1)) === 0, 'the EC stripe unit is a power of two');
assert(limits.ecRecoverySliceBytes % limits.ecStripeUnitBytes === 0, 'a recovery slice is whole stripe units');
assert(limits.ecWriteBytesInflightMax >= 2 * limits.objectSizeBytesMax, 'the EC write budget holds a largest object with parity');
assert(limits.heartbeatIntervalMsDefault * 2 <= limits.livenessDownGraceMsDefault, 'a daemon heartbeats at least twice per grace period');
assert(limits.heartbeatIntervalMsDefault * 2 <= limits.livenessDownGraceMsDefault * limits.leaseGraceRatioDefault, 'a daemon heartbeats at least twice per lease');
assert(limits.leaseGraceRatioDefault <= limits.leaseGraceRatioMax && limits.leaseGraceRatioMax < 1, 'a lease ends before the grace does');
assert(limits.livenessDownGraceMsDefault < limits.livenessOutIntervalMsDefault, 'a disk is marked down before it is marked out');
assert(limits.recoveryOpsInflightBusyMaxDefault >= 1 && limits.recoveryOpsInflightBusyMaxDefault <= limits.recoveryOpsInflightMaxDefault, 'a busy daemon still recovers, never faster than an idle one');
assert(limits.minDownReportersDefault >= 1 && limits.peerReportTtlIntervals >= 2, 'a report is refreshed at least once before it lapses');
assert(limits.diskNearFullRatioDefault < limits.diskFullRatioDefault && limits.diskFullRatioDefault < 1, 'near full comes before full, full before the end');
assert(limits.striperPieceBytesMin <= limits.striperPieceBytesDefault && limits.striperPieceBytesDefault <= limits.striperPieceBytesMax, 'the default piece size is within bounds');
assert(limits.striperPieceBytesMax <= limits.objectSizeBytesMax, 'a piece fits in one object');
assert(limits.striperPieceBytesMax + limits.xattrTotalBytesMax <= limits.txnBytesMax, 'an inline manifest fits in one transaction');
assert(limits.striperObjectSizeBytesMax / limits.striperPieceBytesMin <= Number.MAX_SAFE_INTEGER, 'piece indexes are exact');
assert(limits.striperBufferBytesDefault >= limits.striperPieceBytesMax, 'the buffer budget holds the largest piece');
assert(limits.striperAttrsBytesMax <= limits.xattrValueBytesMax, 'encoded attributes fit in one xattr');
assert(limits.striperLeaseMsDefault > 2 * limits.rpcTimeoutMsDefault, 'a commit started with half a lease left ends within the lease');
assert(limits.scrubCheckIntervalMsDefault <= limits.scrubIntervalMsDefault && limits.scrubIntervalMsDefault <= limits.deepScrubIntervalMsDefault, 'the scheduler looks often enough; deep scrubs are the rarer');
assert(limits.scrubInconsistenciesKeptMax <= limits.scrubInconsistenciesReportedMax && limits.scrubInconsistenciesKeptMax <= limits.listPageEntriesMax, 'a pg keeps no more than a scrub reports, and its record reads in one omap page');
assert(limits.scrubMapPageObjectsMax <= 1000, 'a scrub map page fits the names limit of its request (SCRUB_NAMES_MAX)');
assert(limits.striperLeaseMsDefault < limits.striperSweepGraceMsDefault, 'the sweeper waits longer than a lease');
assert(
  limits.s3GetsInflightPerClientMax >= 1 && limits.s3GetsInflightPerClientMax * limits.striperConcurrencyDefault * limits.striperPieceBytesDefault <= limits.striperBufferBytesDefault / 2,
  "one S3 client's GET read-ahead holds at most half the striper's budget",
);
assert(limits.s3IndexShardsMin >= 1 && limits.s3IndexShardsMin <= limits.s3IndexShardsDefault && limits.s3IndexShardsDefault <= limits.s3IndexShardsMax, 'the default index shard count is within bounds');
assert(limits.s3IndexListEntriesMax >= 1001 * limits.s3IndexShardsDefault, 'a default bucket lists a page of 1000 keys with one read per shard');
