"""s3attn.index_builder."""
