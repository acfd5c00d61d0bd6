"""A run's log, bounded: the head and the tail of its output, with one line saying what was dropped.

A candidate that prints in a loop must not fill the disk: whatever it writes, the log
file holds at most head_bytes + tail_bytes of its output plus the marker line. The
head goes to the file as it comes (so a live run's log can be read), the tail waits
in a bounded ring and is written on close.
"""

from __future__ import annotations

import os
import re
import select
import threading
import time
from collections import deque
from pathlib import Path

MiB = 2**20
_READ = 64 * 1024

# XLA logs every program it loads from the persistent compilation cache as "compiled for
# other CPU features" on some CPUs (AMD Zen 4 here): LLVM tuning flags such as
# +prefer-no-scatter are recorded when compiling but never reported by the host
# (jax-ml/jax#38445). The program loads and runs; the lines only bury the log (one Kinetix
# evaluation wrote 1.6 MB of them). A mismatch in a real instruction set stays in the log.
_NOISE = re.compile(rb"E\d{4} [\d:.]+ +\d+ cpu_aot_loader\.cc:\d+\] Loading XLA:CPU AOT result\. "
                    rb"Target machine feature \+prefer-no-(?:scatter|gather) is not ")
_NOISE_NAME = "XLA's CPU cache-loader warning about tuning flags (harmless, jax-ml/jax#38445)"
_HOLD = 200  # a line start this short may still become a noise line: wait for more before writing it
_HOLD_MAX = 64 * 1024  # a noise line is about 3 KB: a longer unfinished line is written as it is


def size_text(n: int) -> str:
    """A byte count as people read it: '3 MiB', '16 KiB', '10 bytes'."""
    for unit, size in (("MiB", MiB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size} {unit}"
    return f"{n:,} bytes"


def kept_text(head_bytes: int, tail_bytes: int) -> str:
    """What a bounded log keeps, in words: 'the first 1 MiB and the last 3 MiB'."""
    return f"the first {size_text(head_bytes)} and the last {size_text(tail_bytes)}"


class BoundedLog:
    """A log file that keeps the first head_bytes and the last tail_bytes of what is written.

    write() and close() may come from different threads (a reader thread writes, the
    supervisor closes); writes after close are ignored. `total` counts every byte written
    (the output limit reads it); XLA's known-harmless cache-loader lines are left out of the
    file and counted in one closing line.
    """

    def __init__(self, path: Path, head_bytes: int, tail_bytes: int):
        self.path, self.head_bytes, self.tail_bytes = Path(path), head_bytes, tail_bytes
        self.total = 0
        self.noise_lines = 0
        self._kept = 0  # bytes after the noise filter: what head and tail are taken from
        self._pending = b""  # an unfinished line that may be noise
        self._ends_line = True  # whether what was kept so far ends with a newline
        self._file = open(self.path, "wb")
        self._ring: deque[bytes] = deque()
        self._ring_size = 0
        self._lock = threading.Lock()
        self._closed = False

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._closed:
                return
            self.total += len(data)
            self._keep(self._filter(data))

    def _filter(self, data: bytes) -> bytes:
        """The bytes of data worth keeping, holding back an unfinished line that may be noise."""
        data = self._pending + data
        cut = data.rfind(b"\n") + 1
        done, rest = data[:cut], data[cut:]
        if b"cpu_aot_loader" in done:
            lines = done.splitlines(keepends=True)
            kept = [line for line in lines if not _NOISE.match(line)]
            self.noise_lines += len(lines) - len(kept)
            done = b"".join(kept)
        maybe_noise = (len(rest) < _HOLD and rest.startswith(b"E")) or (len(rest) < _HOLD_MAX and _NOISE.match(rest))
        self._pending = rest if maybe_noise else b""
        return done if maybe_noise else done + rest

    def _keep(self, data: bytes) -> None:
        if not data:
            return
        head = max(0, self.head_bytes - self._kept)
        self._kept += len(data)
        self._ends_line = data.endswith(b"\n")
        if head:
            self._file.write(data[:head])
            self._file.flush()
            data = data[head:]
        if len(data) >= self.tail_bytes:
            self._ring.clear()
            self._ring_size = 0
            data = data[len(data) - self.tail_bytes:]
        if data:
            self._ring.append(data)
            self._ring_size += len(data)
        # Drop whole chunks that are no longer needed: the ring holds at most tail_bytes plus one chunk.
        while self._ring and self._ring_size - len(self._ring[0]) >= self.tail_bytes:
            self._ring_size -= len(self._ring.popleft())

    @property
    def dropped(self) -> int:
        """Bytes of output the log does not keep (besides the noise lines)."""
        return max(0, self._kept - self.head_bytes - self.tail_bytes)

    def close(self) -> None:
        """Write the marker (when something was dropped) and the tail; idempotent."""
        with self._lock:
            if self._closed:
                return
            if self._pending and _NOISE.match(self._pending):
                self.noise_lines += 1
            elif self._pending:
                self._keep(self._pending)
            self._pending = b""
            self._closed = True
            tail = b"".join(self._ring)[-self.tail_bytes:] if self.tail_bytes else b""
            if self.dropped:
                self._file.write(f"\n[... {self.dropped:,} bytes of output dropped: the log keeps "
                                 f"its first {size_text(self.head_bytes)} and last "
                                 f"{size_text(self.tail_bytes)} ...]\n".encode())
            self._file.write(tail)
            if self.noise_lines:
                self._file.write(b"" if self._ends_line else b"\n")
                self._file.write(f"[{self.noise_lines:,} lines of {_NOISE_NAME} left out]\n".encode())
            self._file.close()
            self._ring.clear()

    def tail(self, chars: int = 4000) -> str:
        """The end of the log as text (the last `chars` bytes of the file); call after close."""
        with open(self.path, "rb") as f:
            f.seek(max(0, self.path.stat().st_size - chars))
            return f.read().decode("utf-8", "replace")


class Pump:
    """Copies a pipe into a BoundedLog on a thread of its own, in large reads, until end of file.

    Past stop_after bytes it reads no more: the writer then blocks on a full pipe instead of
    flooding on, until its supervisor, who sees `log.total`, stops it. The pump owns fd and
    closes it. finish() lets it drain what is left, but no longer than grace_s: a descendant
    that escaped with the pipe's write end must not hold us.
    """

    def __init__(self, fd: int, log: BoundedLog, stop_after: int | None = None):
        self._fd, self._log, self._stop_after = fd, log, stop_after
        self._deadline = 0.0
        self._finishing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="log-pump", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        try:
            while self._stop_after is None or self._log.total <= self._stop_after:
                ready = poller.poll(100)
                if self._finishing.is_set() and (not ready or time.monotonic() > self._deadline):
                    return
                if ready:
                    chunk = os.read(self._fd, _READ)
                    if not chunk:
                        return
                    self._log.write(chunk)
            self._finishing.wait()
        finally:
            os.close(self._fd)

    def finish(self, grace_s: float = 2.0) -> None:
        """Drain until end of file, a quiet pipe or grace_s, and wait for the thread."""
        self._deadline = time.monotonic() + grace_s
        self._finishing.set()
        self._thread.join(grace_s + 1)
