// Public API of src/crypto; the package root re-exports everything here.
export {};
