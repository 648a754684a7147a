/**
 * Public shapes of src/proxy: reaching any port inside any VM through any node. The proxy asks
 * the node (mesh) and the VM service where a VM lives; it never imports the scheduler, so the
 * VM service arrives as the narrow VmDirectory below, which the scheduler's VmService satisfies.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { MeshNode } from '../node/index.ts'

/** What the proxy needs to know of a VM. */
export interface ProxyVm {
  id: string
  name: string
  state: string
  host: string
}

export type VmLocation = { local: true } | { local: false, peerId: string, nodeName: string }

/** The VM service as the proxy uses it (the scheduler's VmService fits). Dispatches 'vm' events. */
export interface VmDirectory {
  get: (id: string) => ProxyVm | Promise<ProxyVm>
  /** Makes a guest port reachable on the owning host's loopback (reused when it already is). */
  forwardPort: (id: string, guestPort: number) => Promise<{ hostAddress: string, hostPort: number }>
  /** Which node runs the VM. Absent on a node without a mesh: every VM is local. */
  locate?: (id: string) => Promise<VmLocation>
  addEventListener: EventTarget['addEventListener']
  removeEventListener: EventTarget['removeEventListener']
}

/** The parts of the mesh the proxy uses. */
export type ProxyMesh = Pick<MeshNode, 'self' | 'records' | 'on' | 'off' | 'handleStream' | 'unhandleStream' | 'openStream'>

export interface ProxyComponents {
  vms: VmDirectory
  /** Absent on a node without a mesh (tests): routes are kept in memory, every VM is local. */
  mesh?: ProxyMesh
  logger: Logger
  clock: () => number
}

export interface ProxyInit {
  /** Host-name routes {vm id}-{port}.{clusterDomain}; empty turns them off. */
  clusterDomain: string
  /** Node ports TCP routes may take, inclusive. */
  tcpPortRange: { from: number, to: number }
  /** Address this node's TCP route listeners bind; 'off' (or empty): this node serves no TCP routes. */
  tcpListenHost: string
  connectTimeoutMs: number
  /** HMAC key for signed URLs; every node of a cluster must hold the same one. */
  signingKey: Uint8Array
  signedUrlMaxSeconds: number
  /**
   * Direct TLS tunnels to the nodes that run VMs (a key from the cluster key, a port on `host`);
   * absent: bytes to other nodes go over libp2p streams only.
   */
  tunnel?: { host: string, port: number, key: Uint8Array }
  /**
   * false: every proxied request goes through Node's HTTP server and client (the full path), none
   * through the proxy's own HTTP/1.1 path (serveHttp1). For comparison in benches; default on.
   */
  fastHttp?: boolean
}

/** One VM port reached through the proxy. */
export interface ProxyTarget {
  vm: string
  port: number
}

/** How an HTTP request names its target. `prefix` is what was stripped from the path (path routes). */
export interface HttpTarget extends ProxyTarget {
  kind: 'path' | 'host'
  prefix: string
  /** The path and query to send to the VM. */
  upstreamPath: string
}

export type RouteProtocol = 'http' | 'tcp'

/** A route: a cluster-wide record (collection proxy-routes), served by every node. */
export interface ProxyRoute {
  id: string
  vm: string
  port: number
  protocol: RouteProtocol
  /** Open to anyone. Private HTTP routes need a token, API key or signed URL. */
  public: boolean
  /** TCP: the node port every node listens on for this route. */
  listenPort?: number
  /**
   * TCP, private routes: source addresses (CIDR) the listener accepts besides loopback. Raw TCP
   * carries no token, so private access from elsewhere goes through `corral port-forward`.
   */
  allowFrom?: string[]
  description?: string
  createdBy: string
  createdAt: string
}

export interface CreateRouteInput {
  vm: string
  port: number
  protocol: RouteProtocol
  public?: boolean
  /** TCP: ask for this node port (within tcpPortRange); default: the first free one. */
  listenPort?: number
  allowFrom?: string[]
  description?: string
}

/** A route as this node serves it. */
export interface RouteView extends ProxyRoute {
  /** HTTP: where it is reached. TCP: the address this node listens on, or why it does not. */
  urls: string[]
  listening?: { address?: string, error?: string }
}

/** Who a connection is for, for the access log and the host's own log line. */
export interface ConnectionInfo {
  /** The caller's subject, or 'public' / 'grant:<subject>'. */
  subject: string
  /** Where the client connected from. */
  client?: string
  /** The route id when the connection came through a route record. */
  route?: string
  /** How it came in: http, upgrade, tcp, tunnel (port-forward). */
  via: 'http' | 'upgrade' | 'tcp' | 'port-forward'
  /** The request header that carried corral's credential: not passed on to the VM. */
  credentialHeader?: 'authorization' | 'x-api-key'
}

/** A verified signed grant: who signed it, for which VM port, until when (ms). */
export interface ProxyGrant extends ProxyTarget {
  subject: string
  expiresAt: number
}

/** A request head as the proxy's own HTTP/1.1 path parsed it (fast-http.ts). */
export interface RequestHead {
  method: string
  /** The request target as sent: path and query. */
  url: string
  /** Raw header names and values in order: [name, value, name, value, ...]. */
  rawHeaders: string[]
  /** The first value of a header, by its lower-case name. */
  header: (name: string) => string | undefined
}

/** An answer the proxy's own HTTP/1.1 path writes for an error (the API's problem document). */
export interface ErrorAnswer {
  status: number
  contentType: string
  body: string
}

/**
 * What the API decides for requests the proxy serves on its own HTTP/1.1 path (serveHttp1): who
 * may pass, what an error looks like, the access log, and where the connection goes when a
 * request is not one for that path.
 */
export interface Http1Gate {
  /**
   * Who may pass to the target: known at once, or a promise when it must be checked. Throws (or
   * rejects) to refuse with that error; null: not for this path (the connection is handed over).
   */
  admit: (head: RequestHead, target: HttpTarget, socket: Socket) => ConnectionInfo | Promise<ConnectionInfo> | null
  /** Takes the connection over, with the bytes read from it and not handled yet, at a request's start. */
  handover: (socket: Socket, unread: Buffer) => void
  /** The answer for an error (a refusal, or no connection to the VM). */
  answer: (err: unknown, head: RequestHead) => ErrorAnswer
  /** Once per request answered on this path (the access log); status 499: the client left first. */
  done: (entry: { head: RequestHead, target: HttpTarget, subject?: string, status: number, ms: number }) => void
}

export interface HttpServeOptions {
  /** Idle time after which a keep-alive client connection is closed (Node's keepAliveTimeout). */
  keepAliveTimeoutMs: number
  /** Time a request head may take to arrive (Node's headersTimeout). */
  headersTimeoutMs: number
}

export interface ProxyService {
  start: () => Promise<void>
  /** Closes listeners, tunnels and every proxied connection. Safe twice. */
  stop: () => Promise<void>

  /** The VM port an HTTP request is for (path or host-name route), or undefined if not the proxy's. */
  httpTarget: (req: IncomingMessage) => HttpTarget | undefined
  /** True when a public route covers this VM port for the protocol. */
  isPublic: (target: ProxyTarget, protocol: RouteProtocol) => boolean

  /**
   * Forwards one HTTP request to the VM port, streaming both bodies. Rejects (with a typed error,
   * nothing written) when no connection to the VM could be made; once the answer has started,
   * failures cut the response and it resolves.
   */
  forward: (req: IncomingMessage, res: ServerResponse, target: HttpTarget, info: ConnectionInfo) => Promise<void>
  /**
   * Serves a client connection's HTTP/1.1 requests for VM ports itself, without Node's HTTP
   * stack: request heads parsed by Node's llhttp, bodies streamed both ways over pooled
   * keep-alive connections to the VM port. The first request it does not take (another path,
   * an upgrade, HTTP/1.0, Expect, one the gate returns null for) hands the connection to
   * `gate.handover` for good. False: this Node lacks the parser; the caller keeps the connection.
   */
  serveHttp1: (socket: Socket, gate: Http1Gate, options: HttpServeOptions) => boolean
  /** Passes an HTTP upgrade (websocket) through to the VM port; rejects like forward(). */
  upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer, target: HttpTarget, info: ConnectionInfo) => Promise<void>
  /**
   * Connects to the VM port for a client byte stream (a port-forward websocket): rejects with a
   * typed error when it cannot, else attach() joins the client (logged when it closes) and
   * cancel() drops the connection when the client never came.
   */
  tunnel: (target: ProxyTarget, info: ConnectionInfo) => Promise<{ attach: (client: Duplex) => void, cancel: () => void }>

  /** `origin` (the API's scheme://host:port as the caller sees it) makes the HTTP route URLs absolute. */
  listRoutes: (origin?: string) => RouteView[]
  getRoute: (id: string, origin?: string) => RouteView
  createRoute: (input: CreateRouteInput, subject: string, origin?: string) => Promise<RouteView>
  deleteRoute: (id: string, subject: string) => Promise<void>

  /** A grant for a VM port, valid for ttlSeconds, and the URL that carries it. */
  sign: (target: ProxyTarget, subject: string, ttlSeconds?: number) => { grant: string, url: string, expiresAt: string }
  /** Throws ProxyGrantInvalidError unless the grant is genuine, unexpired and for this VM port. */
  verifyGrant: (grant: string, target: ProxyTarget) => ProxyGrant
}
