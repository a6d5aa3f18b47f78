// Public API of src/ldk; the package root re-exports everything here.
export {};
