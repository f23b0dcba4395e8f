"""A benchmark's working directory, removed at its end even while chDB still writes in it."""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

REMOVE_ATTEMPTS = 20
REMOVE_PAUSE_SECONDS = 0.5


def remove_tree(path: Path) -> None:
    """shutil.rmtree, again while it fails: the in-process chDB engine keeps its background threads (merges,
    removing outdated parts) after the hub stops, and one wrote a part while a run's directory was being
    removed (bench_end_to_end, "Directory not empty" after its figures were printed). What still cannot be
    removed is named in one line."""
    error: OSError | None = None
    for _ in range(REMOVE_ATTEMPTS):
        try:
            shutil.rmtree(path)
            return
        except OSError as failure:   # an entry made or removed meanwhile (not found is one too): again
            if not path.exists():
                return
            error = failure
            time.sleep(REMOVE_PAUSE_SECONDS)
    print(f"could not remove {path}: {error}", file=sys.stderr)


@contextmanager
def scratch_directory(prefix: str) -> Iterator[str]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield str(path)
    finally:
        remove_tree(path)
