export { ExisOneClient } from './client.js';
export { ExisOneError } from './errors.js';
export { generateHardwareId } from './hardware.js';
export { fromBase32, isOfflineKey, OFFLINE_KEY_MIN_LENGTH, validateOfflineCode, verifyLease } from './offline.js';
export { VERSION } from './version.js';
export type * from './types.js';
