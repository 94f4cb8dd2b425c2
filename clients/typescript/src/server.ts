// Placeholder while the server client is written (see the next commits).
export {};
