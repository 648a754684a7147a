export { createQemuDriver, QemuDriver, type QemuDriverComponents, type QemuDriverInit } from './driver.ts'
export { chooseAccelerator, probeAcceleratorFacts, type AcceleratorChoice, type AcceleratorFacts, type AcceleratorSetting } from './accelerator.ts'
export { readImageFolder, parseManifest, MANIFEST_FILE, type QemuImageManifest } from './manifest.ts'
