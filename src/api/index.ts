export { createApiServer, apiRoutes, type ApiServer } from './server.ts'
export type { ApiComponents, ApiInit } from './components.ts'
export type { RouteDef } from './route.ts'
export { toProblem } from './problem.ts'
