import sys

from xlm.cli import main

sys.exit(main())
