import { defineConfig } from 'vitest/config';

// Tests start real daemons on real directories; give them room, and run files
// in separate processes so a crashed native binding cannot take others down.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    pool: 'forks',
    testTimeout: 120_000,
    hookTimeout: 60_000,
    fileParallelism: true,
    maxWorkers: 2,
  },
});
