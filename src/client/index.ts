// Public API of src/client; the package root re-exports everything here.
export {};
