export { LocalImages, type ImageRecord, type LocalImagesComponents } from './local-images.ts'
export {
  ImageNotFoundError, ImageExistsError, ChunkingParamsError, ManifestInvalidError, ChunkCorruptError, ChunkNotFoundError, BundleInvalidError
} from './errors.ts'
export { chunkFile, chunkLengths, DEFAULT_CHUNKING, CHUNKER_ALGORITHM, type ChunkingParams } from './chunker.ts'
export { encodeBlob, decodeBlob, sha256Hex } from './blob.ts'
export { decodeManifest, encodeManifest, manifestDigest, validateManifest, blobIds, type BundleManifest, type BundleEntry } from './manifest.ts'
export { ChunkStore } from './chunk-store.ts'
export { packFolder, type BlobSink, type PackProgress } from './pack.ts'
export { unpackBundle, removeTree } from './unpack.ts'
