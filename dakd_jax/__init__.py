"""dakd-jax: Domain Adaptive Knowledge Distillation for driving-scene segmentation in JAX/Flax."""

__version__ = "0.1.0"
