"""Every results table in the docs, produced by code and rendered from committed JSON.

See :mod:`docstables` (``scripts/docstables/``) for the layout; usage::

    python scripts/docs_tables.py list | check | render
    python scripts/docs_tables.py produce [--group coco500|benchmarks|studies|all] [IDS...]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from docstables import main

if __name__ == "__main__":
    sys.exit(main())
