#!/usr/bin/env python3
"""Build the real multilingual corpus that ships with ``xlm`` (under ``data/``).

The code is the package ``scripts/corpus/`` (``build.py`` describes the whole build)::

    python scripts/build_corpus.py            # --cache /tmp/xlm-corpus-cache --out data
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus.build import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
