#!/usr/bin/env python3
"""Build ``data/xnli15/`` (zh, ja, th, ar, el, bg, tr, vi): see ``scripts/corpus/xnli15.py``.

python scripts/build_xnli15.py             # = --cache /tmp/xlm-corpus-cache --out data/xnli15
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus.xnli15 import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
