// Public API of src/store; the package root re-exports everything here.
export * from './types.js';
export * from './errors.js';
