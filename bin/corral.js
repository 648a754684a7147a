#!/usr/bin/env node
// Entry point for `corral` and `npx corral`. It runs dist/ (src/ compiled by `npm run build`, which
// `npm ci` runs) while dist/ matches src/, else the TypeScript sources through Node's type stripping,
// which needs Node 22.18 or later; npm scripts and npx put the project's own Node 24 on PATH.
import { fileURLToPath } from 'node:url'
import { distIsCurrent } from './source-stamp.js'

const [major, minor] = process.versions.node.split('.').map(Number)
if (major < 22 || (major === 22 && minor < 18)) {
  console.error(`corral needs Node.js 22.18 or later, but this is ${process.version}. ` +
    'Run it as `npx corral ...` from the checkout (after `npm ci`), which uses the Node 24 the project installs, ' +
    'or put node_modules/.bin first on PATH.')
  process.exit(1)
}

// `corral node` runs for weeks and is mostly idle, so it starts with settings that keep its resident
// memory low without slowing its hot paths (bench/mesh-idle-memory; figures and what was rejected in
// notes/mesh.md, Memory at rest). V8 reads its flags and glibc its malloc settings only when a process starts, so the
// node re-executes itself once with them (execve: same process id, same stdio), however it was started
// (`npx corral node`, `node bin/corral.js node`, the Dockerfile).
const NODE_FLAGS = [
  // A young generation capped at 4 MB per semi-space, not V8's 16+. With 1 MB a busy node was
  // scavenged every few hundred KB (GC ~28% of its CPU); with 8 MB a founding node's start-up
  // sometimes grew it for good (idle RSS 123-126 MiB instead of ~101); 4 MB kept idle RSS at
  // 99-104 MiB in 5 runs (bench/mesh-idle-memory) and 50-host throughput at 581/s.
  '--max-semi-space-size=4'
]
const MALLOC_ENV = {
  // glibc maps a large buffer and unmaps it when freed, but the first such free (scrypt's 16 MiB,
  // which every node does at start and at each login) also raises that threshold for good, and from
  // then on freed buffers up to that size stay in its arenas: ~30 MB kept after one login. A fixed
  // threshold just under scrypt's size keeps catalog segments (8 MiB) reused from the arenas, for
  // pull speed, while scrypt's memory goes back at once.
  MALLOC_MMAP_THRESHOLD_: String(16 * 1024 * 1024),
  // Two malloc arenas, not eight per core: fewer half-empty ones.
  MALLOC_ARENA_MAX: '2'
}
const RELAUNCHED = 'CORRAL_NODE_RELAUNCHED'

const args = process.argv.slice(2)
const subcommand = args.find((arg, i) => !arg.startsWith('-') && !['--server', '--token', '--api-key'].includes(args[i - 1]))
if (subcommand === 'node') {
  if (process.env[RELAUNCHED] == null) {
    const added = Object.keys(MALLOC_ENV).filter(name => process.env[name] == null)
    try {
      // Flags given to this process come after ours, so they win; absent on Windows.
      process.execve?.(process.execPath, [process.execPath, ...NODE_FLAGS, ...process.execArgv, fileURLToPath(import.meta.url), ...args], {
        ...process.env, ...Object.fromEntries(added.map(name => [name, MALLOC_ENV[name]])), [RELAUNCHED]: added.join(',')
      })
    } catch {
      // Runs as it is, with the defaults.
    }
  } else {
    // VMs and tools the node starts get the environment it was given.
    for (const name of process.env[RELAUNCHED].split(',').filter(Boolean)) delete process.env[name]
    delete process.env[RELAUNCHED]
  }
  // V8's memory reducer is what gives an idle process's heap back to the system, ~10 s after work
  // stops. In V8 13.6 (Node 24) it never starts while the process has made no allocation on the
  // embedder (cppgc) heap, which a corral node never does: it reads the zero rate as a busy process
  // (--trace-memory-reducer: "high alloc") and waits for its 100 s watchdog, so for the first
  // ~100 s the heap stays as large as start-up made it. One vm.Script is such an allocation (a
  // ContextifyScript), and the reducer compacts the heap ~15 s after start: idle node in a 2-node
  // mesh 112 -> 106/102 MiB at 15 s (bench/mesh-idle-memory). Under load the reducer still stays
  // away (the young and old generations' rates are high). The embedder rate decays back to zero
  // within ~2 minutes, so later idle spells wait for the watchdog as before.
  const { Script } = await import('node:vm')
  new Script('') // eslint-disable-line no-new
}

const root = fileURLToPath(new URL('..', import.meta.url))
await import(distIsCurrent(root) ? '../dist/cli/main.js' : '../src/cli/main.ts')
