"""A throwaway PostgreSQL server for the tests: Debian's `postgresql` binaries, initdb into a temp folder, pg_ctl on a
free loopback port, removed at the end. Never a mock: the storage tests run against this real server.

As root, initdb refuses to run, so the cluster belongs to the `postgres` user the Debian package creates
(`runuser -u postgres`). scripts/test.sh installs the package when it is missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

START_TIMEOUT_S = 60


def find_bindir() -> Path | None:
    """The folder of initdb/pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresCluster:
    """A running cluster: `url(database)` gives SQLAlchemy URLs, `create_database` makes a fresh database."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="unet3d-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "unet3d"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: run the server as the package's postgres user
            shutil.chown(self.root, "postgres")
            self._as_owner = ["runuser", "-u", "postgres", "--"]
        self._count = 0

    def start(self) -> PostgresCluster:
        """initdb (trust auth on loopback only: a throwaway cluster) and start; raises with the log on failure."""
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--locale=C", "-N")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c max_connections=200"
        log = self.root / "server.log"
        try:
            self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(log), "-w", "-t",
                      str(START_TIMEOUT_S), "start")  # fmt: skip
        except subprocess.CalledProcessError as e:
            raise RuntimeError(f"PostgreSQL did not start:\n{log.read_text(errors='replace')}") from e
        return self

    def stop(self) -> None:
        """Stop at once and delete the cluster."""
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        """A postgresql:// URL (api.cases.database picks the psycopg 3 driver for it)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its URL."""
        self._count += 1
        name = f"{prefix}_{self._count}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def _run(self, program: str, *arguments: str, check: bool = True) -> None:
        command = [*self._as_owner, str(self.bindir / program), *arguments]
        subprocess.run(command, check=check, capture_output=True, text=True, timeout=120)
