/** `tessera status`: each daemon's reachability and space, and the active native implementations. */
import { resolve as resolvePath } from 'node:path';
import type { Io } from '../io/io.js';
import { nativeStatus } from '../../native/index.js';
import { StoreClient } from '../protocol/store-client.js';
import { createTcpClient } from '../rpc/tcp.js';
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
  let down = 0;
  const lines = await Promise.all(
    file.daemons.map(async (d) => {
      const [host, port] = [d.address.slice(0, d.address.lastIndexOf(':')), Number(d.address.slice(d.address.lastIndexOf(':') + 1))];
      const client = new StoreClient(createTcpClient({ io: o.io, host, port, limits: { rpcAttemptsMax: 1 } }), { timeoutMs: 3000 });
      try {
        const s = await client.statfs();
        return `  disk ${d.diskId} ${d.address}: up, ${s.objects} objects, ${mib(s.usedBytes)} used, ${mib(s.freeBytes)} free\n`;
      } catch (err) {
        down++;
        return `  disk ${d.diskId} ${d.address}: DOWN (${(err as Error).message})\n`;
      } finally {
        await client.close();
      }
    }),
  );
  process.stdout.write(lines.join(''));
  return down === 0 ? 0 : 1;
}
