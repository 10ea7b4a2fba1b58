"""Data: tokenizers, readers of text and records, tokenized corpora, prepared shards, batches."""
