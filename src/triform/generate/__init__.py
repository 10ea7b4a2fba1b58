"""Generation: the KV cache and the decoding strategies built on it."""
