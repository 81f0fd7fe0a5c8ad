"""Training and inference throughput of our XLM against Hugging Face ``transformers``'
``XLMWithLMHeadModel`` with the same sizes and the same weights, measured interleaved
(A B A B ...) in one process. The same as ``xlm bench`` (``xlm bench --help``); the code is
``xlm.benchmarking.throughput``.

    python benchmarks/train_throughput.py                      # demo + paper-shaped
    python benchmarks/train_throughput.py --shapes tiny --repeats 3   # seconds (used by a test)
    python benchmarks/train_throughput.py --config configs/demo.toml --modes train
"""

from __future__ import annotations

import sys

from xlm.benchmarking.throughput import MODES, SHAPES  # noqa: F401  (for callers of this script)
from xlm.cli import main as cli_main


def main(argv: list[str] | None = None) -> int:
    """``xlm bench`` with this script's arguments."""
    return cli_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
