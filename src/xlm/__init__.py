"""xlm: cross-lingual language model pretraining (Lample & Conneau, 2019) and its uses."""

from importlib.metadata import PackageNotFoundError, version

try:  # one source of truth: the version in pyproject.toml, as installed
    __version__ = version("xlm")
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0+unknown"
