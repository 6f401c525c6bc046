import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from launcher_harness import cluster_dir, make_launcher  # noqa: F401  (fixtures)
