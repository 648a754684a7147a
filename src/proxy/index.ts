/**
 * src/proxy: the reverse proxy into VMs. HTTP by path and host name with websocket upgrades, TCP
 * route listeners on node ports, and raw tunnels for port-forward; any node serves any VM, the
 * bytes travel to the VM's host over the mesh. Mounted by src/api; never imports the scheduler.
 */
export { createProxyService } from './proxy-service.ts'
export { grantKeyFromClusterKey, tunnelKeyFromClusterKey } from './keys.ts'
export { PROXY_PROTOCOL, ROUTES_COLLECTION, PATH_PREFIX, GRANT_PARAM, GRANT_COOKIE, DEFAULTS as PROXY_DEFAULTS } from './constants.ts'
export * from './errors.ts'
export type * from './types.ts'
