import { createFolderProvider } from './folder.ts'
import { createArtifactoryProvider } from './artifactory.ts'
import type { ProviderKind, StorageProvider } from './types.ts'

export type { ProviderKind, StorageProvider, ObjectInfo, ProviderCallOptions } from './types.ts'
// The S3 and Azure providers are imported from their own files: each SDK costs a node ~30 MB resident,
// so createProviders loads one only when the config enables it.
export { createFolderProvider, createArtifactoryProvider }

/** The catalog.* provider settings of a node's config (each enabled by its first key). */
export interface ProviderSettings {
  folder: { path: string }
  s3: { bucket: string, prefix: string, endpoint: string, region: string, forcePathStyle: boolean, accessKeyId: string, secretAccessKey: string, sessionToken: string, partSizeMiB: number }
  azure: { container: string, prefix: string, connectionString: string, accountUrl: string, accountName: string, accountKey: string, sasToken: string }
  artifactory: { url: string, prefix: string, apiKey: string, accessToken: string }
}

/** Every provider the settings enable, by kind (folder, s3, azure, artifactory in that order); an SDK loads only if its provider is enabled. */
export async function createProviders (settings: ProviderSettings, concurrency = 4): Promise<Partial<Record<ProviderKind, StorageProvider>>> {
  const providers: Partial<Record<ProviderKind, StorageProvider>> = {}
  if (settings.folder.path !== '') providers.folder = createFolderProvider({ path: settings.folder.path })
  const s3 = settings.s3
  if (s3.bucket !== '') {
    const { createS3Provider } = await import('./s3.ts')
    providers.s3 = createS3Provider({
      bucket: s3.bucket, prefix: s3.prefix, endpoint: s3.endpoint, region: s3.region, forcePathStyle: s3.forcePathStyle,
      accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey, sessionToken: s3.sessionToken,
      partSizeBytes: s3.partSizeMiB * 1024 * 1024, partConcurrency: concurrency
    })
  }
  const az = settings.azure
  if (az.container !== '') {
    const { createAzureProvider } = await import('./azure.ts')
    providers.azure = createAzureProvider({ ...az, concurrency })
  }
  const art = settings.artifactory
  if (art.url !== '') providers.artifactory = createArtifactoryProvider(art)
  return providers
}
