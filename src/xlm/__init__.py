"""xlm: cross-lingual language model pretraining (Lample & Conneau, 2019) and its uses."""

__version__ = "0.1.0"
