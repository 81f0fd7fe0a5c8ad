"""Measurements of our own speed: ``throughput`` times our model against Hugging Face
``transformers``' XLM with the same sizes and weights (``xlm bench``)."""
