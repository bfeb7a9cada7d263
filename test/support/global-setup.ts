import { dropTestSchemas } from './backends';

/** Test runs leave one PostgreSQL schema per ledger; drop them when the run ends. */
export default function setup(): () => Promise<void> {
  return async () => {
    if (process.env.FB_KEEP_SCHEMAS) return;
    await dropTestSchemas().catch((e: Error) => console.warn(`could not drop test schemas: ${e.message}`));
  };
}
