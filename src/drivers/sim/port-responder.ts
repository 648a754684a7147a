import { createServer, type Server, type Socket } from 'node:net'

/**
 * What a simulated guest serves on a forwarded port: an HTTP page for HTTP requests, an echo for any
 * other bytes (so raw-TCP paths such as SSH tunnels can be exercised without a real VM).
 */
export async function listenSimPort (vmName: string, guestPort: number): Promise<Server> {
  const server = createServer((socket: Socket) => {
    socket.once('data', (first: Buffer) => {
      if (/^(GET|HEAD|POST|PUT|DELETE|OPTIONS|PATCH) /.test(first.toString('latin1', 0, 8))) {
        const body = `corral simulated VM ${vmName}, port ${guestPort}\n`
        socket.end(`HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\nx-corral-simulated: true\r\n\r\n${body}`)
        return
      }
      socket.write(first)
      socket.pipe(socket)
    })
    socket.on('error', () => socket.destroy())
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  return server
}
