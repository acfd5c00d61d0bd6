"""Disk use of a run's folder, polled cheaply while the run goes on."""

from __future__ import annotations

import os
import time
from pathlib import Path


def disk_usage(root: Path) -> tuple[int, int]:
    """(bytes on disk, number of entries) under root, not following links; vanishing files are skipped."""
    used = entries = 0
    stack = [str(root)]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for entry in it:
                entries += 1
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                used += st.st_blocks * 512  # allocated blocks: a sparse file costs what it uses
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return used, entries


class DiskWatch:
    """Says when a folder holds more than limit_mb, or more entries than max_entries (inode exhaustion).

    Polled at most every interval_s: walking a folder is cheap but not free.
    """

    def __init__(self, root: Path, limit_mb: int, max_entries: int = 200_000, interval_s: float = 0.25):
        self.root, self.limit, self.max_entries, self.interval = root, limit_mb * 2**20, max_entries, interval_s
        self._last = 0.0

    def over(self, force: bool = False) -> bool:
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return False
        self._last = now
        used, entries = disk_usage(self.root)
        return used > self.limit or entries > self.max_entries
