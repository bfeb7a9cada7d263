import type { Reporter, TestModule } from 'vitest/node';

/**
 * Prints, after the summary, every test that was skipped with a reason (`ctx.skip(reason)`):
 * a check that could not run on this machine (no Chromium, no Redis…) must be seen, not lost
 * among the passes.
 */
export default class NotRunReporter implements Reporter {
  onTestRunEnd(modules: ReadonlyArray<TestModule>): void {
    const lines: string[] = [];
    for (const m of modules) {
      for (const t of m.children.allTests()) {
        const r = t.result();
        if (r.state === 'skipped' && r.note) lines.push(`  - ${t.fullName}\n      ${r.note}`);
      }
    }
    if (!lines.length) return;
    const bar = '!'.repeat(78);
    process.stdout.write(`\n${bar}\n NOT RUN on this machine (${lines.length}): these checks were skipped, not passed\n${lines.join('\n')}\n${bar}\n`);
  }
}
