export { LocalImages, type ImageRecord, type LocalImagesComponents, type CatalogImageSource, type OfferedImage } from './local-images.ts'
export {
  ImageNotFoundError, ImageExistsError, ChunkingParamsError, ManifestInvalidError, ChunkCorruptError, ChunkNotFoundError, BundleInvalidError,
  ObjectNotFoundError, ProviderError, ProviderConfigError, CatalogRequestError, CatalogImageNotFoundError, CatalogVersionNotFoundError,
  CatalogVersionExistsError, CatalogAccessDeniedError, ImageRevokedError, CatalogJobNotFoundError, CacheFullError, PackGoneError
} from './errors.ts'
export { collectGarbage, type GarbageReport, type GarbageItem, type PushLease } from './garbage.ts'
export { chunkFile, chunkLengths, DEFAULT_CHUNKING, CHUNKER_ALGORITHM, type ChunkingParams } from './chunker.ts'
export { encodeBlob, decodeBlob, sha256Hex } from './blob.ts'
export { decodeManifest, encodeManifest, manifestDigest, validateManifest, blobIds, type BundleManifest, type BundleEntry } from './manifest.ts'
export { ChunkStore } from './chunk-store.ts'
export { packFolder, type BlobSink, type PackProgress } from './pack.ts'
export { unpackBundle, removeTree } from './unpack.ts'
export {
  CatalogService, type CatalogComponents, type CatalogInit, type CatalogJob, type CatalogMetrics, type PushOptions, type PullOptions, type LocalCatalogImage, type PeerRouting
} from './catalog-service.ts'
export { checkAccess, missingClaims } from './access.ts'
export { CatalogPeers, CHUNK_PROTOCOL, type CatalogPeersComponents, type CatalogPeersInit, type HolderGarbage } from './p2p.ts'
export { createProviders, createFolderProvider, createArtifactoryProvider, type ProviderSettings } from './providers/index.ts'
export type {
  CatalogArch, CatalogEntry, CatalogImage, CatalogUser, CatalogVersion, GuestInfo, MinHost, PrefetchResult, ProviderKind, StorageProvider, TransferProgress
} from './types.ts'
