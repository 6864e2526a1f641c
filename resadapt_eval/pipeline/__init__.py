"""Running an evaluation: decoding media, the per-sample loop, prefetch, sharding and the results store."""
