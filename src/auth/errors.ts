import { CorralError } from '../errors.ts'

/**
 * Wrong username or password, or an unknown or revoked API key. Deliberately the same for every
 * cause, so a caller cannot learn whether a user exists.
 */
export class InvalidCredentialsError extends CorralError {
  override name = 'InvalidCredentialsError'
}

/** Too many failed logins for this username; `details.retryAt` says when to try again. */
export class AccountLockedError extends CorralError {
  override name = 'AccountLockedError'
}

/** No credential, or a token/key that is malformed, expired, tampered with or revoked. */
export class UnauthenticatedError extends CorralError {
  override name = 'UnauthenticatedError'
}

/** The caller is known but lacks a claim; `details.claim` names it. */
export class ForbiddenError extends CorralError {
  override name = 'ForbiddenError'
}

export class UserNotFoundError extends CorralError {
  override name = 'UserNotFoundError'
}

export class UserExistsError extends CorralError {
  override name = 'UserExistsError'
}

/** The change would leave no user with the admin role. */
export class LastAdminError extends CorralError {
  override name = 'LastAdminError'
}

export class RoleNotFoundError extends CorralError {
  override name = 'RoleNotFoundError'
}

export class RoleExistsError extends CorralError {
  override name = 'RoleExistsError'
}

/** A custom role still held by users or API keys cannot be deleted. */
export class RoleInUseError extends CorralError {
  override name = 'RoleInUseError'
}

/** Built-in roles (admin, operator, ci, viewer) cannot be deleted or changed. */
export class BuiltinRoleError extends CorralError {
  override name = 'BuiltinRoleError'
}

export class ApiKeyNotFoundError extends CorralError {
  override name = 'ApiKeyNotFoundError'
}

/** Input that breaks a rule (username shape, password length, unknown role or claim). */
export class AuthValidationError extends CorralError {
  override name = 'AuthValidationError'
}

/** The JWT signing key file cannot be read or is not an Ed25519 private JWK. */
export class AuthKeyFileError extends CorralError {
  override name = 'AuthKeyFileError'
}

/** A method was called before start() finished or after stop(). */
export class AuthNotStartedError extends CorralError {
  override name = 'AuthNotStartedError'
}
