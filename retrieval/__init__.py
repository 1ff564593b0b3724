"""s3attn.retrieval."""
