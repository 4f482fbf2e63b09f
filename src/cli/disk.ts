/** `tessera disk init`: creates a store on a directory with its cluster and disk identity. */
import type { Io } from '../io/io.js';
import { ObjectStore } from '../store/index.js';

export async function initDisk(o: { io: Io; diskPath: string; clusterId: string; diskId: number }): Promise<void> {
  const store = await ObjectStore.open({ io: o.io, path: o.diskPath, create: { clusterId: o.clusterId, diskId: o.diskId }, expect: { clusterId: o.clusterId, diskId: o.diskId } });
  await store.close();
  process.stdout.write(`disk ${o.diskId} of cluster ${o.clusterId} ready at ${o.diskPath}\n`);
}
