export { createParallelsDriver, ParallelsDriver, type ParallelsDriverComponents, type ParallelsDriverInit } from './driver.ts'
export { createProcessRunner, type Runner, type RunOptions, type RunResult, type ProcessRunnerInit } from './runner.ts'
export type { ParallelsSnapshot } from './parse.ts'
