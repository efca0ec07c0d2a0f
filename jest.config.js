/** Real containers and VMs: tests run as root, one file at a time (see README). */
module.exports = {
  preset: 'ts-jest',
  testEnvironment: 'node',
  roots: ['<rootDir>/test'],
  testMatch: ['**/*.test.ts'],
  testTimeout: 120_000,
  globalTeardown: '<rootDir>/test/helpers/open-handles.js',
  // Names, file by file, what a test file left open (and the teardown fails a process held alive after the suite).
  reporters: ['default', '<rootDir>/test/helpers/open-handles-reporter.js'],
  // Transpiled only, as test/helpers/ts-register.js does for child processes: the types of test/ are
  // checked by `tsc -p tsconfig.json` (npm run build, which CI runs first); type-checking each file
  // again here cost 20-45 s of a cold small file at load 17 (6-14 s transpiled).
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: { isolatedModules: true } }] },
};
