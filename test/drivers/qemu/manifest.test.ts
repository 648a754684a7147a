import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseManifest, readImageFolder } from '../../../src/drivers/qemu/manifest.ts'

const valid = { name: 'g', arch: 'x86_64', os: 'linux', kernel: 'vmlinuz', initrd: 'initrd.img', cmdline: 'console=ttyS0', disk: 'base.qcow2', defaultCpus: 1, defaultMemoryMiB: 256, diskMiB: 64, agent: 'qemu-ga', ports: [80] }

describe('parseManifest', () => {
  it('accepts the test guest manifest', () => {
    const m = parseManifest(valid, 'image.json')
    assert.equal(m.agent, 'qemu-ga')
    assert.deepEqual(m.ports, [80])
    assert.equal(m.disk, 'base.qcow2')
  })

  it('defaults agent to none and ports to none', () => {
    const m = parseManifest({ name: 'd', arch: 'x86_64', os: 'windows', disk: 'w.qcow2', defaultCpus: 2, defaultMemoryMiB: 4096 }, 'image.json')
    assert.equal(m.agent, 'none')
    assert.deepEqual(m.ports, [])
  })

  const bad: Array<[string, Record<string, unknown>, RegExp]> = [
    ['no disk or kernel', { ...valid, disk: undefined, kernel: undefined, initrd: undefined, cmdline: undefined }, /needs "disk"/],
    ['an unknown arch', { ...valid, arch: 'riscv' }, /"arch" must be/],
    ['an unknown os', { ...valid, os: 'beos' }, /"os" must be/],
    ['a path outside the folder', { ...valid, disk: '../other/base.qcow2' }, /inside the image folder/],
    ['an absolute path', { ...valid, kernel: '/boot/vmlinuz' }, /inside the image folder/],
    ['zero CPUs', { ...valid, defaultCpus: 0 }, /"defaultCpus" must be an integer/],
    ['a bad port', { ...valid, ports: [80, 70000] }, /"ports"/],
    ['an unknown agent', { ...valid, agent: 'ssh' }, /"agent"/],
    ['microvm', { ...valid, machine: 'microvm' }, /microvm/]
  ]
  for (const [what, manifest, message] of bad) {
    it(`rejects ${what} with ImageInvalidError naming the field`, () => {
      assert.throws(() => parseManifest(manifest, '/x/image.json'), (err: Error) => err.name === 'ImageInvalidError' && message.test(err.message) && err.message.startsWith('/x/image.json'))
    })
  }
})

describe('readImageFolder', () => {
  let dir: string
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'corral-manifest-')) })
  after(async () => { await rm(dir, { recursive: true, force: true }) })

  it('resolves the files of a folder (or of its image.json)', async () => {
    const folder = join(dir, 'ok')
    await mkdir(folder)
    for (const f of ['vmlinuz', 'initrd.img', 'base.qcow2']) await writeFile(join(folder, f), 'x')
    await writeFile(join(folder, 'image.json'), JSON.stringify(valid))
    const image = await readImageFolder(folder)
    assert.equal(image.kernelPath, join(folder, 'vmlinuz'))
    assert.equal(image.diskPath, join(folder, 'base.qcow2'))
    assert.equal((await readImageFolder(join(folder, 'image.json'))).folder, folder)
  })

  it('explains a folder without image.json, bad JSON and missing files', async () => {
    const empty = join(dir, 'empty')
    await mkdir(empty)
    await assert.rejects(readImageFolder(empty), { name: 'ImageInvalidError', message: /has no image\.json/ })
    await writeFile(join(empty, 'image.json'), '{ not json')
    await assert.rejects(readImageFolder(empty), { name: 'ImageInvalidError', message: /not valid JSON/ })
    await writeFile(join(empty, 'image.json'), JSON.stringify(valid))
    await assert.rejects(readImageFolder(empty), { name: 'ImageInvalidError', message: /"disk" names base\.qcow2, which is not a file/ })
    await assert.rejects(readImageFolder(''), { name: 'ImageInvalidError' })
  })
})
