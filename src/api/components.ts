import type { Logger } from 'pino'
import type { AuthService } from '../auth/index.ts'
import type { LocalImages } from '../catalog/index.ts'
import type { VmService } from '../scheduler/index.ts'

export interface ApiComponents {
  auth: AuthService
  vms: VmService
  images: LocalImages
  logger: Logger
  clock: () => number
}

export interface ApiInit {
  /** host:port to listen on; port 0 picks a free one. */
  addr: string
  maxBodyBytes: number
  version: string
}
