"""s3attn.train."""
