"""Parts every Transformer here is built from."""
