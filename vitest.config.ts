import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Contract tests share one PostgreSQL server; per-file schemas keep them apart.
    fileParallelism: true,
    pool: 'forks',
    globalSetup: ['test/support/global-setup.ts'],
    // The second reporter lists, after the summary, every check skipped for a reason of this machine.
    reporters: ['default', './test/support/not-run-reporter.ts'],
  },
});
