"""The ``creditline`` command and a real ``creditline serve`` as subprocesses, for the command-line tests."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import IO

from tests.support.live import free_port


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``creditline ARGS`` to the end and capture what it printed."""
    return subprocess.run(
        [sys.executable, "-m", "creditline", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@contextlib.contextmanager
def served(
    env: dict[str, str],
    *,
    ready: str = "/healthz",
    output: int | IO[str] = subprocess.DEVNULL,
    wait: float = 60,
    port: int | None = None,
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``creditline serve`` on ``port`` (default: a free one), once ``ready`` answers 200; yields its URL and
    process, and stops it afterwards. A server that exits or never answers fails the test."""
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "creditline", "serve", "--port", str(port)],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT if output is not subprocess.DEVNULL else subprocess.DEVNULL,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                with urllib.request.urlopen(f"{url}{ready}", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None:
                raise AssertionError(f"the server exited with {proc.returncode}")
            if time.monotonic() > deadline:
                raise AssertionError("the server did not start")
            time.sleep(0.1)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stdout is not None:
            proc.stdout.close()
