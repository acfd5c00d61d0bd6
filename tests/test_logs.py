"""The bounded log (sandbox/logs.py) and the supervised launch's output limit, without a sandbox."""

import re
import string
import sys
import time
from pathlib import Path

from sandbox.limits import Limits, supervise
from sandbox.logs import BoundedLog, MiB, kept_text, size_text


def test_bounded_log_keeps_head_marker_and_tail_exactly(tmp_path):
    data = (string.ascii_letters * 20).encode()[:1024]
    log = BoundedLog(tmp_path / "log", head_bytes=10, tail_bytes=8)
    # Chunks of every kind: inside the head, across its end, smaller and larger than the tail.
    for a, b in [(0, 3), (3, 14), (14, 20), (20, 500), (500, 1019), (1019, 1024)]:
        log.write(data[a:b])
    assert log.total == 1024 and log.dropped == 1006
    log.close()
    log.close()  # idempotent
    log.write(b"after close")  # ignored: a late reader writes nothing more
    marker = b"\n[... 1,006 bytes of output dropped: the log keeps its first 10 bytes and last 8 bytes ...]\n"
    assert (tmp_path / "log").read_bytes() == data[:10] + marker + data[-8:]
    assert log.tail(8) == data[-8:].decode()


def test_bounded_log_under_its_bound_is_the_output_itself(tmp_path):
    log = BoundedLog(tmp_path / "log", head_bytes=4, tail_bytes=6)
    for piece in (b"ab", b"cdef", b"ghij"):  # exactly head + tail: nothing dropped
        log.write(piece)
    log.close()
    assert (tmp_path / "log").read_bytes() == b"abcdefghij" and log.dropped == 0
    assert log.tail(3) == "hij"


def test_bounded_log_head_is_on_disk_while_the_run_goes_on(tmp_path):
    log = BoundedLog(tmp_path / "log", head_bytes=MiB, tail_bytes=MiB)
    log.write(b"started\n")
    assert (tmp_path / "log").read_bytes() == b"started\n"
    log.close()


def test_sizes_in_words():
    assert size_text(3 * MiB) == "3 MiB" and size_text(16 * 1024) == "16 KiB" and size_text(1500) == "1,500 bytes"
    assert kept_text(MiB, 3 * MiB) == "the first 1 MiB and the last 3 MiB"


FLOOD = "import sys\nline = 'x' * 2**20 + '\\n'\nprint('HEAD', flush=True)\ni = 0\nwhile True:\n" \
        "    sys.stdout.write(f'out {i} ' + line)\n    sys.stderr.write(f'err {i} ' + line)\n    i += 1\n"


def test_supervise_stops_a_flood_at_the_output_limit(tmp_path):
    limits = Limits(time_s=60, memory_mb=2000, output_mb=32)
    t0 = time.time()
    outcome = supervise([sys.executable, "-c", FLOOD], env={"PYTHONUNBUFFERED": "1"}, cwd=tmp_path, limits=limits,
                        log_path=tmp_path / "log")
    assert outcome.exceeded == "output" and not outcome.ok and time.time() - t0 < 30
    text = (tmp_path / "log").read_bytes()
    marker = re.search(rb"\n\[\.\.\. ([\d,]+) bytes of output dropped: the log keeps its first 1 MiB and last 3 MiB "
                       rb"\.\.\.\]\n", text)
    assert marker and len(text) - len(marker.group(0)) == 4 * MiB
    assert text.startswith(b"HEAD\nout 0 ") and int(marker.group(1).replace(b",", b"")) >= 28 * MiB
    tail = text[marker.end():]
    assert max(int(n) for n in re.findall(rb"(?:out|err) (\d+) ", tail)) >= 14  # the flood's last lines (16+ in all)
    assert outcome.log_tail and tail.decode().endswith(outcome.log_tail)


def test_supervise_keeps_a_quiet_runs_output_whole(tmp_path):
    outcome = supervise([sys.executable, "-c", "import sys; print('to out'); print('to err', file=sys.stderr)"],
                        env={}, cwd=tmp_path, limits=Limits(time_s=30, memory_mb=2000), log_path=tmp_path / "log")
    assert outcome.ok and outcome.exceeded is None
    assert sorted((tmp_path / "log").read_text().splitlines()) == ["to err", "to out"]
    assert "to out" in outcome.log_tail


NOISE = (Path(__file__).parent / "fixtures" / "xla_aot_noise.log").read_bytes()  # two lines jax 0.9 wrote here


def test_xla_cache_loader_noise_is_left_out_and_counted_but_other_lines_stay(tmp_path):
    scatter, gather = NOISE.splitlines(keepends=True)
    real_isa = scatter.replace(b"+prefer-no-scatter is not", b"+avx512fp16 is not")  # a real mismatch: kept
    out = b"".join([b"step 1\n", scatter, gather, b"Error: step 2 failed\n", real_isa, scatter, b"Epoch 3 done"])
    log = BoundedLog(tmp_path / "log", head_bytes=MiB, tail_bytes=MiB)
    for i in range(0, len(out), 97):  # chunks that cut the noise lines anywhere, the "E" of a line included
        log.write(out[i:i + 97])
    assert log.total == len(out)  # the output limit still sees every byte
    log.close()
    text = (tmp_path / "log").read_bytes()
    assert text == (b"step 1\nError: step 2 failed\n" + real_isa + b"Epoch 3 done\n[3 lines of XLA's CPU "
                    b"cache-loader warning about tuning flags (harmless, jax-ml/jax#38445) left out]\n")
    assert log.noise_lines == 3 and log.dropped == 0


def test_a_line_that_may_become_noise_waits_only_until_it_cannot(tmp_path):
    log = BoundedLog(tmp_path / "log", head_bytes=MiB, tail_bytes=MiB)
    log.write(b"E12")  # the start of an XLA log line: held
    assert (tmp_path / "log").read_bytes() == b""
    log.write(b"03 10:00:00.000000    7 other.cc:1] something else went wrong" + b"." * 200)
    assert (tmp_path / "log").read_bytes().startswith(b"E1203 10:00:00.000000    7 other.cc:1] something")
    log.write(NOISE[:500])  # an unfinished noise line at the end of the output is noise too
    log.close()
    assert b"cpu_aot_loader" not in (tmp_path / "log").read_bytes() and log.noise_lines == 1
