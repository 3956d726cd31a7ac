"""Data: class table, TFDS builders (TF-free), grain pipelines and the synthetic domain pair."""
