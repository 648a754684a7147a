import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { chooseAccelerator, parseCpuFlags, type AcceleratorFacts } from '../../../src/drivers/qemu/accelerator.ts'

const linux = (over: Partial<AcceleratorFacts>): AcceleratorFacts =>
  ({ platform: 'linux', arch: 'x64', cpuFlags: new Set(['fpu', 'sse2']), kvm: 'usable', hvf: false, ...over })

describe('chooseAccelerator', () => {
  it('does not trust a /dev/kvm without vmx or svm (nested paravirtual KVM): TCG, and says why', () => {
    const choice = chooseAccelerator('auto', linux({}))
    assert.equal(choice.name, 'tcg')
    assert.match(choice.reason, /neither vmx nor svm/)
  })

  it('uses KVM when /dev/kvm opens and the CPU has vmx or svm', () => {
    assert.equal(chooseAccelerator('auto', linux({ cpuFlags: new Set(['vmx']) })).name, 'kvm')
    const amd = chooseAccelerator('auto', linux({ cpuFlags: new Set(['svm']) }))
    assert.equal(amd.name, 'kvm')
    assert.match(amd.reason, /svm/)
  })

  it('falls back to TCG when /dev/kvm is missing or not accessible, whatever the flags', () => {
    const missing = chooseAccelerator('auto', linux({ kvm: 'missing', cpuFlags: new Set(['vmx']) }))
    assert.equal(missing.name, 'tcg')
    assert.match(missing.reason, /does not exist/)
    const denied = chooseAccelerator('auto', linux({ kvm: 'denied', cpuFlags: new Set(['vmx']) }))
    assert.equal(denied.name, 'tcg')
    assert.match(denied.reason, /kvm group/)
  })

  it('treats unreadable cpu flags as unconfirmed', () => {
    assert.equal(chooseAccelerator('auto', linux({ cpuFlags: undefined })).name, 'tcg')
  })

  it('trusts /dev/kvm on arm64, where cpuinfo lists no virtualisation flag', () => {
    assert.equal(chooseAccelerator('auto', linux({ arch: 'arm64', cpuFlags: new Set(['fp', 'asimd']) })).name, 'kvm')
  })

  it('uses HVF on macOS only when the Hypervisor framework is there', () => {
    const mac: AcceleratorFacts = { platform: 'darwin', arch: 'arm64', kvm: 'missing', hvf: true }
    assert.equal(chooseAccelerator('auto', mac).name, 'hvf')
    assert.equal(chooseAccelerator('auto', { ...mac, hvf: false }).name, 'tcg')
  })

  it('lets config force an accelerator and records what detection thought', () => {
    const forced = chooseAccelerator('kvm', linux({}))
    assert.equal(forced.name, 'kvm')
    assert.match(forced.reason, /forced by config/)
    assert.match(forced.reason, /would have chosen tcg/)
    const agreeing = chooseAccelerator('tcg', linux({}))
    assert.equal(agreeing.name, 'tcg')
    assert.match(agreeing.reason, /detection agrees/)
  })
})

describe('parseCpuFlags', () => {
  it('reads x86 flags and arm Features lines', () => {
    const flags = parseCpuFlags('processor\t: 0\nflags\t\t: fpu vme vmx sse2\n\nprocessor\t: 1\nflags\t\t: fpu vmx\n')
    assert.ok(flags.has('vmx') && flags.has('sse2'))
    assert.ok(parseCpuFlags('Features\t: fp asimd evtstrm\n').has('asimd'))
    assert.equal(parseCpuFlags('model name : Intel vmx inside\n').has('vmx'), false)
  })
})
