"""Kept for old commands: the harness is the package benchmarks/harness/.

uv run --all-groups python -m benchmarks.harness [--quick]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
