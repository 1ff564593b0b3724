"""s3attn.evaluation: the s3-eval harness: tasks, metrics, runs, reports."""
