"""A throwaway PostgreSQL server for tests: initdb + pg_ctl on a free port in a temp dir."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
from contextlib import contextmanager
from pathlib import Path


def server_binaries() -> Path | None:
    """Where initdb and pg_ctl live (on PATH, or Debian's /usr/lib/postgresql/<version>/bin)."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def postgres_server(base: Path):
    """Yields a postgresql:// URL of a fresh database; the server is stopped afterwards.

    PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user that
    Debian's package creates."""
    bin_dir = server_binaries()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql)")
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data, sockets = base / "pgdata", base / "pgsock"
    base.mkdir(parents=True, exist_ok=True)
    sockets.mkdir()
    if as_user:
        shutil.chown(base, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, text=True)

    pg(str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "-U", "postgres")
    pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
       "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1", "start")
    try:
        pg(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "bench")
        yield f"postgresql://postgres@127.0.0.1:{port}/bench"
    finally:
        pg(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
