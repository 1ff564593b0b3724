"""s3attn.models: model access: loading (GGUF -> safetensors cache), K/Q taps, the fp16 question view."""
