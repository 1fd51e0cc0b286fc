/** The SDK's version (kept equal to package.json's by the build test). */
export const VERSION = '0.10.0';
