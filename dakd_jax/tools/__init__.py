"""Command-line tools beside the training path: conversion, benchmarks, comparisons, deployment.

  python -m dakd_jax.tools.convert      PyTorch checkpoints -> variables directories
  python -m dakd_jax.tools.benchmark    the jitted step and evaluation alone: time, FLOPs, memory
  python -m dakd_jax.tools.compare      JAX vs the PyTorch reference step: parity and speed
  python -m dakd_jax.tools.throughput   the input pipeline's images/s
  python -m dakd_jax.tools.stage_table  the stages of every config as a Markdown table
  python -m dakd_jax.predict            segment images, folders or videos (tools/predict.py)
  python -m dakd_jax.tools.export       the inference function as a jax.export file
  python -m dakd_jax.tools.profile_model  parameters, FLOPs, memory and speed of each network
"""
