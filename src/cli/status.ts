/** `tessera status`: the map (disks up/down, pools), each daemon's space, and the active native implementations. */
import { resolve as resolvePath } from 'node:path';
import type { Io } from '../io/io.js';
import { nativeStatus } from '../../native/index.js';
import { StoreClient } from '../protocol/store-client.js';
import { createTcpClient } from '../rpc/tcp.js';
import { connectMapService } from '../../cluster/map-daemon.js';
import { clientPath, readJson, type ClientFile } from './cluster-files.js';

const mib = (n: number): string => `${(n / 1024 / 1024).toFixed(1)} MiB`;

export async function runStatus(o: { io: Io; dataDir: string }): Promise<number> {
  const file = await readJson<ClientFile>(o.io, clientPath(resolvePath(o.dataDir)));
  if (!file) {
    process.stderr.write(`no cluster in ${o.dataDir} (start one with: tessera up --data ${o.dataDir})\n`);
    return 1;
  }
  const native = nativeStatus();
  process.stdout.write(`cluster ${file.clusterId}\nchecksum: ${native.checksum}, erasure coding: ${native.codec}\n`);
  const conn = connectMapService(o.io, file.map);
  try {
    const map = await conn.service.current({ signal: AbortSignal.timeout(3000) });
    process.stdout.write(`map epoch ${map.epoch}, map service ${file.map}\n`);
    for (const p of map.pools) {
      const r = p.redundancy;
      process.stdout.write(`  pool ${p.name} (id ${p.id}): ${r.type === 'replicated' ? `replicated ${r.size}/${r.minSize}` : `erasure ${r.dataShards}+${r.parityShards}`}, ${p.pgCount} pgs\n`);
    }
    let down = 0;
    const lines = await Promise.all(
      map.disks.map(async (d) => {
        if (!d.up) {
          down++;
          return `  disk ${d.id} ${d.address} (${d.host}): DOWN\n`;
        }
        const at = d.address.lastIndexOf(':');
        const client = new StoreClient(createTcpClient({ io: o.io, host: d.address.slice(0, at), port: Number(d.address.slice(at + 1)), limits: { rpcAttemptsMax: 1 } }), { timeoutMs: 3000 });
        try {
          const s = await client.statfs();
          return `  disk ${d.id} ${d.address} (${d.host}): up, ${s.objects} objects, ${mib(s.usedBytes)} used, ${mib(s.freeBytes)} free\n`;
        } catch (err) {
          down++;
          return `  disk ${d.id} ${d.address} (${d.host}): UNREACHABLE (${(err as Error).message})\n`;
        } finally {
          await client.close();
        }
      }),
    );
    process.stdout.write(lines.join(''));
    return down === 0 ? 0 : 1;
  } catch (err) {
    process.stdout.write(`map service ${file.map}: DOWN (${(err as Error).message})\n`);
    return 1;
  } finally {
    await conn.close();
  }
}
