import { configDefaults, defineConfig } from 'vitest/config';

const E2E = ['test/e2e/*.e2e.test.ts'];

export default defineConfig({
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    globalSetup: ['test/support/global-setup.ts'],
    // The second reporter lists, after the summary, every check skipped for a reason of this machine.
    reporters: ['default', './test/support/not-run-reporter.ts'],
    projects: [
      {
        extends: true,
        // Contract tests share one PostgreSQL server; per-file schemas keep them apart.
        test: { name: 'unit', include: ['test/**/*.test.ts'], exclude: [...configDefaults.exclude, ...E2E], fileParallelism: true, sequence: { groupOrder: 0 } },
      },
      {
        extends: true,
        // The Flowise end-to-end files install the plugin into the same Flowise and each start Flowise
        // processes: one at a time, after the rest (two cores).
        test: { name: 'e2e', include: E2E, fileParallelism: false, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
