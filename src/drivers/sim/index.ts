export { createSimDriver, SimDriver, type SimDriverInit, type SimTimings } from './driver.ts'
export { builtinSimImages } from './builtin.ts'
