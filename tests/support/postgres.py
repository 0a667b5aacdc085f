"""A throwaway PostgreSQL server for tests: Debian's binaries, a temporary data folder, loopback only.

``start_postgres()`` runs ``initdb`` and ``pg_ctl start`` from
``/usr/lib/postgresql/<version>/bin`` (15 when present) on a fresh folder
and a free port on 127.0.0.1, with trust authentication (nothing but this
host's loopback can reach it) and durability off (a test server loses
nothing that matters). ``PostgresServer.stop()`` stops it and deletes the
folder. PostgreSQL refuses to run as root, so under root (CI containers)
every server command runs as the ``postgres`` user, which owns the folder.

Whatever cannot start raises :class:`PostgresUnavailable` with the reason;
the test fixture turns it into a skip, or into a failure when
``ATFLASH_TEST_POSTGRES=required`` (CI). With ``ATFLASH_TEST_PG_ROOT`` set,
data folders are made inside it, so a CI trap can stop a server left by a
killed test run (``pg_ctl stop -D <root>/*/data``).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REQUIRED_ENV = "ATFLASH_TEST_POSTGRES"  # "required": a server that cannot start fails the tests
ROOT_ENV = "ATFLASH_TEST_PG_ROOT"  # where data folders go
PREFERRED_VERSION = 15
SERVER_USER = "postgres"
COMMAND_TIMEOUT = 60  # initdb or a start/stop taking longer is broken, not slow
START_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it
# A test server needs no durability: faster commits, the same locking and constraints.
_SERVER_OPTIONS = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


class PostgresUnavailable(Exception):
    """PostgreSQL cannot run here; the message says why."""


def required() -> bool:
    """Whether a server that cannot start is a failure here (CI), not a reason to skip."""
    return os.environ.get(REQUIRED_ENV, "").lower() == "required"


@dataclass
class PostgresServer:
    """A running server; ``url`` reaches its ``postgres`` database as the superuser."""

    bindir: Path
    top: Path  # holds data/ and server.log; deleted by stop()
    port: int
    run_as: pwd.struct_passwd | None  # the OS user running the server, when we are root
    stopped: bool = False

    @property
    def data(self) -> Path:
        return self.top / "data"

    @property
    def url(self) -> str:
        return self.database_url("postgres")

    def database_url(self, name: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"not a plain database name: {name!r}")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.database_url(name)

    def stop(self) -> None:
        """Stop the server (fast, then immediate) and delete its folder; safe to call twice."""
        if self.stopped:
            return
        self.stopped = True
        try:
            for mode in ("fast", "immediate"):
                done = _run(
                    self, "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False
                )
                if done.returncode == 0 or not (self.data / "postmaster.pid").exists():
                    break
        finally:
            shutil.rmtree(self.top, ignore_errors=True)


def find_bindir() -> Path | None:
    """Debian's server binaries, version 15 when installed, else the newest."""
    found = {}
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        version = Path(initdb).parent.parent.name
        if version.isdigit():
            found[int(version)] = Path(initdb).parent
    if not found:
        return None
    return found.get(PREFERRED_VERSION) or found[max(found)]


def start_postgres() -> PostgresServer:
    """Start a server on a free loopback port; :class:`PostgresUnavailable` when it cannot."""
    try:
        import psycopg  # noqa: F401  (the tests talk to the server through it)
    except ImportError:
        raise PostgresUnavailable("psycopg is not installed (pip install -e '.[test]')") from None
    bindir = find_bindir()
    if bindir is None:
        raise PostgresUnavailable(
            "no PostgreSQL server (/usr/lib/postgresql/*/bin/initdb); apt-get install postgresql"
        )
    run_as = _server_user()
    top = _make_top(run_as)
    server = PostgresServer(bindir, top, 0, run_as)
    try:
        _initdb(server)
        _start(server)
    except BaseException:
        server.stop()
        raise
    return server


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None  # run as ourselves: PostgreSQL only refuses root
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise PostgresUnavailable(
            f"running as root and there is no {SERVER_USER!r} user to run the server as"
        ) from None


def _make_top(run_as: pwd.struct_passwd | None) -> Path:
    base = os.environ.get(ROOT_ENV) or None
    top = Path(tempfile.mkdtemp(prefix="atflash-pg-", dir=base))
    if run_as is not None:
        # mkdtemp makes it 0700 for root: the server user must own what it writes.
        os.chown(top, run_as.pw_uid, run_as.pw_gid)
    return top


def _initdb(server: PostgresServer) -> None:
    done = _run(
        server, "initdb", "-D", str(server.data), "-U", "postgres", "-A", "trust",
        "-E", "UTF8", "--no-locale", "--no-sync", check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise PostgresUnavailable(f"initdb failed: {_tail(done.stdout + done.stderr)}")


def _start(server: PostgresServer) -> None:
    log = server.top / "server.log"
    for _ in range(START_ATTEMPTS):
        server.port = _free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {server.port} "
            f"-c unix_socket_directories='{server.top}' {_SERVER_OPTIONS}"
        )
        done = _run(
            server, "pg_ctl", "-D", str(server.data), "-l", str(log), "-o", options,
            "-w", "-t", str(COMMAND_TIMEOUT), "start", check=False,
        )  # fmt: skip
        if done.returncode == 0:
            return
        text = log.read_text(errors="replace") if log.exists() else done.stdout + done.stderr
        if "could not bind" not in text and "in use" not in text:
            raise PostgresUnavailable(f"pg_ctl start failed: {_tail(text)}")
    raise PostgresUnavailable(f"no free port after {START_ATTEMPTS} attempts")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(
    server: PostgresServer, tool: str, *args: str, check: bool
) -> subprocess.CompletedProcess[str]:
    """A server tool, as the server user when we are root, in the server's folder."""
    user = server.run_as
    # PG* variables of the caller (PGPORT, PGDATA...) must not redirect the tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(LC_ALL="C", HOME=str(server.top))
    if user is not None:
        env.update(USER=user.pw_name, LOGNAME=user.pw_name)
    return subprocess.run(
        [str(server.bindir / tool), *args],
        cwd=server.top,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=check,
        user=user.pw_uid if user else None,
        group=user.pw_gid if user else None,
        extra_groups=[] if user else None,
    )


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])
