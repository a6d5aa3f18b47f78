// Public API of src/store; the package root re-exports everything here.
export {};
