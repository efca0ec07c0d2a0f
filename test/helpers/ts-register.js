/**
 * Lets a plain `node` child process of a test load the TypeScript sources:
 * `node -r ./test/helpers/ts-register.js script.js`, where the script requires `../../lib`.
 * Each .ts file is transpiled when loaded, without type checks (tsc and ts-jest do those), so a
 * test's second process runs the same code as the test itself, with no build step.
 *
 * Transpiled files are cached by the hash of their source (and of this file's options) in the
 * temp dir: loading `typescript` and transpiling lib/ took ~0.9 s per process, and the CLI tests
 * start a few hundred.
 */
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const CACHE = path.join(os.tmpdir(), 'lxq-ts-register-cache');
const OPTIONS = 'commonjs es2022 esModuleInterop';
let ts;

function transpile(source, filename) {
  ts ??= require('typescript');
  const compilerOptions = { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true };
  return ts.transpileModule(source, { fileName: filename, compilerOptions }).outputText;
}

require.extensions['.ts'] = (module, filename) => {
  const source = fs.readFileSync(filename, 'utf8');
  const key = crypto.createHash('sha256').update(OPTIONS).update('\0').update(filename).update('\0').update(source).digest('hex');
  const cached = path.join(CACHE, `${key}.js`);
  let output;
  try {
    output = fs.readFileSync(cached, 'utf8');
  } catch {
    output = transpile(source, filename);
    // Written whole, then renamed: a concurrent reader sees the old state or the new file.
    const tmp = `${cached}.${process.pid}.tmp`;
    try {
      fs.mkdirSync(CACHE, { recursive: true });
      fs.writeFileSync(tmp, output);
      fs.renameSync(tmp, cached);
    } catch {
      fs.rmSync(tmp, { force: true });
    }
  }
  module._compile(output, filename);
};
