// tsc does not copy hand-off JavaScript: put the generated protobuf module next to the
// compiled code that imports it.
import { cpSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
cpSync(join(root, 'src/protocol/generated'), join(root, 'dist/src/protocol/generated'), { recursive: true });
