import type { IncomingMessage } from 'node:http'
import { PATH_PREFIX } from './constants.ts'
import type { HttpTarget } from './types.ts'

const VM_ID = /^vm-[0-9a-f]{1,64}$/
const PORT = /^[0-9]{1,5}$/

/**
 * The VM port an HTTP request is for: /proxy/vms/{id}/{port}/... (the prefix is stripped), or a
 * host name {id}-{port}.{clusterDomain} (the whole host is the VM's). Undefined otherwise.
 * A path route without its trailing slash has upstreamPath '' (the gateway redirects).
 */
export function httpTargetOf (req: IncomingMessage, clusterDomain: string): HttpTarget | undefined {
  return httpTargetFor(req.url ?? '/', req.headers.host, clusterDomain)
}

/** httpTargetOf from the request target and Host header themselves. */
export function httpTargetFor (url: string, hostHeader: string | undefined, clusterDomain: string): HttpTarget | undefined {
  if (clusterDomain !== '') {
    const byHost = hostTarget(hostHeader, clusterDomain, url)
    if (byHost != null) return byHost
  }
  if (!url.startsWith(PATH_PREFIX)) return undefined
  const q = url.indexOf('?')
  const pathOnly = q < 0 ? url : url.slice(0, q)
  const query = q < 0 ? '' : url.slice(q)
  const rest = pathOnly.slice(PATH_PREFIX.length)
  const slash1 = rest.indexOf('/')
  if (slash1 <= 0) return undefined
  const vm = rest.slice(0, slash1)
  const afterVm = rest.slice(slash1 + 1)
  const slash2 = afterVm.indexOf('/')
  const portText = slash2 < 0 ? afterVm : afterVm.slice(0, slash2)
  if (!VM_ID.test(vm) || !PORT.test(portText)) return undefined
  const port = Number(portText)
  if (port < 1 || port > 65535) return undefined
  const prefix = `${PATH_PREFIX}${vm}/${port}`
  const upstreamPath = slash2 < 0 ? '' : afterVm.slice(slash2) + query
  return { kind: 'path', vm, port, prefix, upstreamPath }
}

function hostTarget (hostHeader: string | undefined, domain: string, url: string): HttpTarget | undefined {
  if (hostHeader == null) return undefined
  let host = hostHeader.toLowerCase()
  // host:port, or [v6]:port (never a VM host name)
  const colon = host.lastIndexOf(':')
  if (colon > 0 && !host.endsWith(']')) host = host.slice(0, colon)
  if (host.endsWith('.')) host = host.slice(0, -1)
  const suffix = '.' + domain.toLowerCase().replace(/^\.|\.$/g, '')
  if (!host.endsWith(suffix)) return undefined
  const label = host.slice(0, -suffix.length)
  const dash = label.lastIndexOf('-')
  if (dash <= 0) return undefined
  const vm = label.slice(0, dash)
  const portText = label.slice(dash + 1)
  if (!VM_ID.test(vm) || !PORT.test(portText)) return undefined
  const port = Number(portText)
  if (port < 1 || port > 65535) return undefined
  return { kind: 'host', vm, port, prefix: '', upstreamPath: url }
}

/** The URLs a VM port is reached at through a node whose API is at `origin`. */
export function httpUrlsOf (vm: string, port: number, origin: string | undefined, clusterDomain: string): string[] {
  const urls = [`${origin ?? ''}${PATH_PREFIX}${vm}/${port}/`]
  if (clusterDomain !== '') {
    const scheme = origin?.startsWith('https:') === true ? 'https' : 'http'
    const apiPort = origin != null ? new URL(origin).port : ''
    urls.push(`${scheme}://${vm}-${port}.${clusterDomain.replace(/^\.|\.$/g, '')}${apiPort !== '' ? `:${apiPort}` : ''}/`)
  }
  return urls
}
