"""Start `python -m mmrec.serve` as a process on loopback and wait until it is ready (for the
serving experiments)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TOKEN = "experiments-token"  # the write token the experiments' servers take


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    bundle: Path, port: int, workers: int = 1, log: Path | None = None, timeout: float = 600
) -> subprocess.Popen:
    """The server in its own process group (so that it can be killed whole), ready to answer."""
    env = {**os.environ, "MMREC_API_TOKEN": TOKEN}
    command = [sys.executable, "-m", "mmrec.serve", f"bundle={bundle}", f"port={port}", f"workers={workers}"]
    stderr = open(log, "a") if log else subprocess.DEVNULL  # noqa: SIM115 (the server process owns it)
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode} (run with a log file to see why)")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/ready", timeout=2).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"the server did not become ready in {timeout:.0f} s")
