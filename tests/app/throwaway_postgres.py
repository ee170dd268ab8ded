"""A throwaway PostgreSQL cluster for tests: initdb + pg_ctl in a temporary folder, Unix socket only.

`throwaway_postgres()` yields a connection URL and removes the cluster afterwards. It raises
`PostgresUnavailable` with the reason when it cannot: no PostgreSQL server binaries, no psycopg, or running
as root without a `postgres` user to run the server as (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUPERUSER = "drface"
START_TIMEOUT_S = 60


class PostgresUnavailable(Exception):
    pass


def server_bin_dir() -> Path:
    """The folder of initdb and pg_ctl: on PATH, else Debian's /usr/lib/postgresql/<version>/bin."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(os.path.realpath(initdb)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise PostgresUnavailable("PostgreSQL server binaries (initdb) not found; apt-get install postgresql")
    return Path(found[-1]).parent


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """A running cluster of its own; yields `postgresql://drface@/postgres?host=<socket dir>`."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise PostgresUnavailable("psycopg is not installed") from exc
    bin_dir = server_bin_dir()
    run_as: dict[str, int] = {}
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise PostgresUnavailable("running as root and there is no 'postgres' user to run it as") from exc
        run_as = {"user": account.pw_uid, "group": account.pw_gid}
    root = Path(tempfile.mkdtemp(prefix="drface-pg-"))
    if run_as:
        os.chown(root, run_as["user"], run_as["group"])
    data, socket_dir, log = root / "data", root / "socket", root / "server.log"
    socket_dir.mkdir()
    if run_as:
        os.chown(socket_dir, run_as["user"], run_as["group"])

    def command(*args: str) -> None:
        result = subprocess.run(args, capture_output=True, text=True, timeout=START_TIMEOUT_S, **run_as)
        if result.returncode != 0:
            raise PostgresUnavailable(f"{Path(args[0]).name} failed: {result.stderr.strip()[-500:]}")

    try:
        command(
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = f"-k {socket_dir} -c listen_addresses='' -c fsync=off -c full_page_writes=off"
        command(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
    except (PostgresUnavailable, OSError, subprocess.TimeoutExpired) as exc:
        shutil.rmtree(root, ignore_errors=True)
        raise PostgresUnavailable(str(exc)) from exc
    try:
        yield f"postgresql://{SUPERUSER}@/postgres?host={socket_dir}"
    finally:
        subprocess.run(
            [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=START_TIMEOUT_S,
            **run_as,
        )
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """Create an empty database on the cluster; returns its URL."""
    import psycopg

    name = f"gallery_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return server_url.replace("/postgres?", f"/{name}?")
