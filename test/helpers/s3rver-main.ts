/**
 * Runs s3rver (an S3-compatible server from npm) on loopback in its own process, so its CPU is not
 * the test's: prints `{"port":N}` once listening, stops on SIGTERM. Args: <directory> <bucket>...
 */
import S3rver from 's3rver'

const [directory, ...buckets] = process.argv.slice(2)
const server = new S3rver({ port: 0, address: '127.0.0.1', directory, silent: true, configureBuckets: buckets.map(name => ({ name })) })
const info = await server.run()
process.stdout.write(JSON.stringify({ port: info.port }) + '\n')
process.once('SIGTERM', () => { void server.close().then(() => process.exit(0)) })
