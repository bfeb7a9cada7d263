#!/usr/bin/env node
import { run } from './program';

// The one place the exit code is set: run() decides it (commands report a "not ok" verdict through the CLI context).
void run(process.argv).then((code) => {
  process.exitCode = code;
});
