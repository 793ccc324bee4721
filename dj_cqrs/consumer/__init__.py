"""The consumer side of a transport: message lifecycle, batching and worker supervision."""
