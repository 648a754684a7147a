/**
 * The node's libp2p identity: an Ed25519 key kept in `<dataDir>/keys/peer-id.key` (protobuf bytes,
 * mode 0600) so the peer id survives restarts and other nodes recognise the node when it returns.
 */
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises'
import { dirname, join } from 'node:path'
import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys'
import type { PrivateKey } from '@libp2p/interface'
import type { Logger } from 'pino'
import { PEER_KEY_PATH } from './constants.ts'
import { PeerKeyInvalidError } from './errors.ts'

export function peerKeyPath (dataDir: string): string {
  return join(dataDir, ...PEER_KEY_PATH)
}

export async function loadOrCreatePeerKey (dataDir: string, logger: Logger): Promise<PrivateKey> {
  const path = peerKeyPath(dataDir)
  let bytes: Buffer | undefined
  try {
    bytes = await readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  if (bytes !== undefined) {
    try {
      return privateKeyFromProtobuf(bytes)
    } catch (err) {
      throw new PeerKeyInvalidError(`The peer identity key ${path} cannot be read as a libp2p key. Restore it from a ` +
        'backup, or delete it to give this node a new identity (the others will see a new member).', { path }, { cause: err })
    }
  }
  const key = await generateKeyPair('Ed25519')
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  // Write then rename, so a crash never leaves a half-written key that would block the next start.
  const tmp = `${path}.${process.pid}.tmp`
  await writeFile(tmp, privateKeyToProtobuf(key), { mode: 0o600, flag: 'wx' })
  await chmod(tmp, 0o600)
  await rename(tmp, path)
  logger.info({ path }, 'created a new peer identity key')
  return key
}
