// Compiles src/ to JavaScript in dist/, so a node runs without Node's TypeScript type stripping,
// which keeps ~11 MB more resident for as long as the node runs (bench/mesh-idle-memory).
// bin/corral.js runs dist/ while it matches src/ (dist/.source-stamp), else the sources: edits
// take effect without a rebuild, at that memory cost, until the next `npm run build`.
//
//   node scripts/build.js              build (npm run build); fails if TypeScript is missing
//   node scripts/build.js --optional   for npm's prepare step: skips, saying why, where there is no
//                                      TypeScript (npm ci --omit=dev) or no src/ yet (the Dockerfile)
//   node scripts/build.js --if-stale   does nothing while dist/ matches src/ (scripts/quickstart.sh)
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { STAMP_FILE, distIsCurrent, sourceStamp } from '../bin/source-stamp.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const optional = process.argv.includes('--optional')
const dist = join(root, 'dist')

const skip = (why) => {
  if (!optional) {
    console.error(`corral build: ${why}`)
    process.exit(1)
  }
  console.error(`corral build: skipped, ${why}; corral runs from the TypeScript sources`)
  process.exit(0)
}

if (!existsSync(join(root, 'src'))) skip('there is no src/ folder')
if (process.argv.includes('--if-stale') && distIsCurrent(root)) process.exit(0)
let tsc
try {
  tsc = join(dirname(createRequire(join(root, 'package.json')).resolve('typescript/package.json')), 'bin', 'tsc')
} catch {
  skip('TypeScript is not installed (it is a dev dependency: npm ci without --omit=dev)')
}

// The stamp is taken before compiling: a source edited during the build leaves dist/ stale, not wrong.
const stamp = sourceStamp(root)
rmSync(dist, { recursive: true, force: true })
const result = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit' })
if (result.status !== 0) {
  // No stamp: bin/corral.js keeps running the sources.
  console.error(`corral build: tsc failed (${result.status ?? result.signal}); corral runs from the TypeScript sources until it builds`)
  process.exit(1)
}
mkdirSync(dist, { recursive: true })
writeFileSync(join(dist, STAMP_FILE), stamp)
console.error(`corral build: dist/ compiled from src/ (${stamp.split('\n').length - 1} files)`)
