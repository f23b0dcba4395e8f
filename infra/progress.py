"""Progress on long work (loads, generation, benchmarks): records done, rate and time left, on the terminal
only. tqdm decides: with disable=None a bar is drawn when stderr is a terminal and nothing is written when
it is a file or a pipe (logs, CI)."""
from __future__ import annotations

import sys

from tqdm import tqdm


def progress_bar(total: int | None, description: str, unit: str = "records", bytes_: bool = False,
                 position: int | None = None) -> tqdm:
    """A bar over total items (bytes_=True: total is a size in bytes, shown scaled); no total, a counter."""
    return tqdm(total=total, desc=description, unit="B" if bytes_ else f" {unit}", unit_scale=True,
                unit_divisor=1024 if bytes_ else 1000, file=sys.stderr, disable=None, leave=True,
                position=position, dynamic_ncols=True, mininterval=0.5, smoothing=0.1)
