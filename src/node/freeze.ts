/**
 * Freezes a plain JSON value all the way down and returns it. Gossiped states are read far more
 * often than they change, so readers share one frozen copy instead of each taking a deep copy.
 */
export function deepFreeze<T> (value: T): T {
  if (value === null || typeof value !== 'object' || Object.isFrozen(value)) return value
  Object.freeze(value)
  for (const child of Object.values(value as Record<string, unknown>)) deepFreeze(child)
  return value
}
