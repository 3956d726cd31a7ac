"""PyTorch parity references (optional `torch` extra; never imported by dakd_jax itself)."""
