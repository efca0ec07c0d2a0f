/**
 * Lets a plain `node` child process of a test load the TypeScript sources:
 * `node -r ./test/helpers/ts-register.js script.js`, where the script requires `../../lib`.
 * Each .ts file is transpiled when loaded, without type checks (tsc and ts-jest do those), so a
 * test's second process runs the same code as the test itself, with no build step.
 */
'use strict';
const fs = require('node:fs');
const ts = require('typescript');

const compilerOptions = {
  module: ts.ModuleKind.CommonJS,
  target: ts.ScriptTarget.ES2022,
  esModuleInterop: true,
};

require.extensions['.ts'] = (module, filename) => {
  const { outputText } = ts.transpileModule(fs.readFileSync(filename, 'utf8'), { fileName: filename, compilerOptions });
  module._compile(outputText, filename);
};
