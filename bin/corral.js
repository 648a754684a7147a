#!/usr/bin/env -S node --max-semi-space-size=1
// (A node is mostly idle: small young-generation spaces keep its resident memory ~25 MB lower.)
// Entry point for `corral` and `npx corral`. The sources are TypeScript run by Node's type stripping,
// which needs Node 22.18 or later; npm scripts and npx put the project's own Node 24 on PATH.
const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(`corral needs Node.js 22.18 or later, but this is ${process.version}. ` +
    'Run it as `npx corral ...` from the checkout (after `npm ci`), which uses the Node 24 the project installs, ' +
    'or put node_modules/.bin first on PATH.')
  process.exit(1)
}
await import('../src/cli/main.ts')
