// Placeholder while the client is written (see the next commits).
export type { paths, components, operations } from "./api.js";
