/**
 * Who may use an image. A user needs every claim the image requires, each either as one of
 * corral's claims or as a role of that name (so the free-form claims images carry from the
 * Parallels DevOps Service map onto roles). Those who hold catalog:write manage the catalog and
 * may always pull. Revoked images and versions take no new users at all.
 */
import { CatalogAccessDeniedError, ImageRevokedError } from './errors.ts'
import type { CatalogImage, CatalogUser, CatalogVersion } from './types.ts'

export const MANAGE_CLAIM = 'catalog:write'

export function missingClaims (user: CatalogUser, image: CatalogImage): string[] {
  if (user.claims.has(MANAGE_CLAIM)) return []
  return image.requiredClaims.filter(claim => !user.claims.has(claim) && !user.roles.includes(claim))
}

/** Throws unless the user may pull the version, or create VMs from it. */
export function checkAccess (user: CatalogUser, image: CatalogImage, version?: CatalogVersion): void {
  const missing = missingClaims(user, image)
  if (missing.length > 0) {
    throw new CatalogAccessDeniedError(`${user.subject} may not use catalog image "${image.id}": it requires ${missing.join(', ')} (a claim, or a role of that name), which ${user.subject} does not have; ask an admin for a role that grants it`, { image: image.id, missing })
  }
  const revoked = image.revoked ?? version?.revoked
  if (revoked != null) {
    const what = image.revoked != null ? `image "${image.id}"` : `version ${version?.version ?? ''} (${version?.arch ?? ''}) of "${image.id}"`
    throw new ImageRevokedError(`${what} was revoked by ${revoked.by} at ${revoked.at} (${revoked.reason}); no new pulls or VMs from it. Use another version, or un-revoke it`, { image: image.id, version: version?.version })
  }
}
