import { dropTestSchemas } from './backends';

/**
 * Importing backends sets FB_TEST_RUN, which the workers inherit, so every
 * PostgreSQL schema of this run carries it; the teardown drops exactly those.
 */
export default function setup(): () => Promise<void> {
  return async () => {
    if (process.env.FB_KEEP_SCHEMAS) return;
    await dropTestSchemas().catch((e: Error) => console.warn(`could not drop test schemas: ${e.message}`));
  };
}
