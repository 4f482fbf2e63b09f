/** Temporary directories for tests, removed afterwards (also when a test fails). */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export async function makeTempDir(prefix: string): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(process.env.TESSERA_TEST_TMP ?? tmpdir(), `tessera-${prefix}-`));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}
