export { LocalImages, type ImageRecord, type LocalImagesComponents } from './local-images.ts'
export { ImageNotFoundError, ImageExistsError } from './errors.ts'
