"""Start and stop `vllm serve` as a subprocess on 127.0.0.1 (tests_vllm and `hired serve-bench`).

Pure standard library on the client side: the benchmark runs it from hired's own venv, with the
server from the vLLM venv. Stopping is by PID only: SIGTERM to the server, SIGKILL after a grace
period, then any child it left, each by its own PID (read from /proc, no psutil needed).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid: int) -> list[int]:
    """Descendants of ``pid``, from /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    out, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        out += kids
        frontier += kids
    return out


class VLLMServer:
    """``with VLLMServer(vllm_bin, model, args, env, log) as server: server.url``"""

    def __init__(self, vllm_bin: str, model: str, args: list[str], env: dict[str, str], log: Path,
                 timeout: float = 300):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [vllm_bin, "serve", model, "--host", "127.0.0.1", "--port", str(self.port), *args]
        self.env, self.log_path, self.timeout = env, log, timeout
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None

    def __enter__(self) -> VLLMServer:
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        try:
            self.startup_s = self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_ready(self) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < self.timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with code {self.proc.returncode} before it was ready:\n"
                                   + self.log_path.read_text()[-4000:])
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - t0
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"vllm serve not ready after {self.timeout:.0f} s (log {self.log_path})")

    def stop(self) -> list[int]:
        """SIGTERM the server by PID (SIGKILL after 30 s), then its leftover children by PID.
        Returns the children that had to be killed."""
        if self.proc is None:
            return []
        kids = children_of(self.proc.pid)
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        time.sleep(0.5)
        left = [pid for pid in kids if Path(f"/proc/{pid}").exists()]
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
        self.proc = None
        return left

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path, timeout=10) as r:
            return r.read().decode()
