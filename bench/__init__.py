"""bench: cross image-classification architectures with loss functions, honestly.

The Python API (the `bench` command is a thin layer over the same code): `run`, `tune`, `grid`,
`leaderboard`, `load_runs`; bad input raises `UsageError`. See bench/api.py.
"""

from bench.api import grid, leaderboard, load_runs, run, tune
from bench.errors import UsageError

__version__ = "0.1.0"
__all__ = ["run", "tune", "grid", "leaderboard", "load_runs", "UsageError", "__version__"]
