"""Where seal's data sets live: `$SEAL_DATA`, else `shared/data` beside the checkout (the development layout).

The benchmark and training configs take their default data paths from here as absolute paths, so a run
works from any working directory and the config it saves says exactly which files it read. Point one at
other data with `SEAL_DATA=DIR` (a directory holding `squad/`) or with the config key itself, e.g.
`--set data=/data/squad_val.json`.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKOUT_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def data_root() -> Path:
    env = os.environ.get("SEAL_DATA")
    return Path(env).expanduser().resolve() if env else CHECKOUT_DATA


def data_file(relative: str) -> str:
    """The default path of a data set, `relative` to the data root (a config field's default factory)."""
    return str(data_root() / relative)
