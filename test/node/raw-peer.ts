/**
 * A bare libp2p host that holds the cluster key but runs none of corral's checks: the fuzz tests
 * use it to send whatever bytes they like on corral's protocols and topics.
 */
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { gossipsub } from '@libp2p/gossipsub'
import type { GossipSub, SignaturePolicy } from '@libp2p/gossipsub'
import { identify } from '@libp2p/identify'
import { tcp } from '@libp2p/tcp'
import type { Libp2p } from '@libp2p/interface'
import { createLibp2p } from 'libp2p'
import { clusterKeySecret } from '../../src/node/cluster-key.ts'
import { HEARTBEAT_TOPIC, RECORDS_TOPIC } from '../../src/node/constants.ts'
import { clusterKeyProtector } from '../../src/node/protector.ts'

export type RawPeer = Libp2p<{ identify: unknown, pubsub: GossipSub }>

export async function createRawPeer (clusterKey: string, signaturePolicy: SignaturePolicy = 'StrictSign'): Promise<RawPeer> {
  const peer = await createLibp2p({
    addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    connectionProtector: clusterKeyProtector({ psk: clusterKeySecret(clusterKey), timeoutMs: 5000, onMismatch: () => {} }),
    connectionManager: { allow: ['/ip4/127.0.0.1'] },
    services: {
      identify: identify(),
      pubsub: gossipsub({
        globalSignaturePolicy: signaturePolicy,
        allowPublishToZeroTopicPeers: true,
        fallbackToFloodsub: false,
        scoreParams: { IPColocationFactorWeight: 0 },
        maxInboundDataLength: 4 * 1024 * 1024
      })
    }
  })
  peer.services.pubsub.subscribe(HEARTBEAT_TOPIC)
  peer.services.pubsub.subscribe(RECORDS_TOPIC)
  return peer
}
