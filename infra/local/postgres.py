"""Embedded PostgreSQL for `make run`: the same engine as production, from a pip wheel.

`pgserver` ships the PostgreSQL 16 server binaries in its wheel and wraps initdb / pg_ctl.
Its data directory lives in the state dir (`.ymera/pgdata`), it listens on a Unix socket
in that directory only (no TCP port, so parallel runtimes never collide), and it is stopped
when the last process using it lets go (`make run` and `make admin` can share it).

Postgres refuses to run as root. Run as root, pgserver creates a system user `pgserver`
(`useradd`), chowns the data directory to it, runs initdb/pg_ctl as that user and opens the
directories above the data directory for traversal (`o+rx`) so that user can reach it: the
state dir is then 0755, while the JWT secret inside stays 0600.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

log = logging.getLogger("infra.local.postgres")

PGDATA_DIR = "pgdata"
DATABASE = "ymera"
HANDLES_FILE = ".handle_pids.json"  # pgserver's list of processes using the server
SUPERUSER = "postgres"  # pgserver's initdb superuser; trust auth on the socket only


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started (message says why, log path included)."""


def database_url(socket_dir: Path, database: str = DATABASE) -> str:
    """A SQLAlchemy URL for a database behind a Unix socket directory."""
    return f"postgresql+psycopg://{SUPERUSER}@/{database}?host={quote(str(socket_dir), safe='/')}"


class EmbeddedPostgres:
    def __init__(self, state_dir: Path, database: str = DATABASE) -> None:
        self.pgdata = state_dir / PGDATA_DIR
        self.database = database
        self._server: Any = None
        self.started_in: float = 0.0

    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        socket_dir = self._server.get_postmaster_info().socket_dir
        return database_url(Path(socket_dir), self.database)

    def start(self) -> EmbeddedPostgres:
        started = time.monotonic()
        self._forget_dead_holders()
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (root shells, CI); pgserver then
            # keeps its lock file in /tmp/runtime-<uid>, which is what we want anyway.
            warnings.simplefilter("ignore")
            try:
                import pgserver
            except ModuleNotFoundError as exc:
                raise EmbeddedPostgresError(
                    "pgserver is not installed (pip install -r requirements-dev.txt), "
                    "or set DATABASE_URL to a Postgres you run") from exc
            try:
                # cleanup_mode="stop": the last process holding a handle stops the server.
                self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
            except Exception as exc:  # initdb/pg_ctl failures surface as CalledProcessError etc.
                raise EmbeddedPostgresError(
                    f"embedded Postgres in {self.pgdata} did not start ({exc}); "
                    f"see {self.pgdata / 'log'}") from exc
        self._ensure_database()
        self.started_in = time.monotonic() - started
        log.info("embedded Postgres ready in %.2fs (data in %s)", self.started_in, self.pgdata)
        return self

    def _forget_dead_holders(self) -> None:
        """Drop pids of processes that died holding the server (kill -9, a crash).

        pgserver stops the server only when the exiting process is the last pid in
        `.handle_pids.json`; a dead pid left there would keep it running forever.
        """
        path = self.pgdata / HANDLES_FILE
        try:
            pids = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except ValueError:
            pids = []
        alive = [pid for pid in pids if isinstance(pid, int) and _pid_alive(pid)]
        if alive != pids:
            path.write_text(json.dumps(alive), encoding="utf-8")

    def _ensure_database(self) -> None:
        import psycopg
        from psycopg import sql

        admin = self._server.get_uri()  # libpq URI to the `postgres` maintenance database
        with psycopg.connect(admin, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (self.database,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
                log.info("created database %s", self.database)
            # A development database: no fsync. The shutdown checkpoint then only hands pages to the
            # OS (Ctrl-C stops within 3 s: fsync made the stop take 0.5-1.2 s of it). A process crash
            # loses nothing; only an OS crash or power loss could corrupt this (throwaway) data.
            if conn.execute("SHOW fsync").fetchone() != ("off",):
                conn.execute("ALTER SYSTEM SET fsync = off")
                conn.execute("SELECT pg_reload_conf()")

    def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.cleanup()  # pg_ctl stop (fast mode) unless another process still holds it


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_postgres(state_dir: Path) -> EmbeddedPostgres | None:
    """Start embedded Postgres and export DATABASE_URL unless the developer gave one."""
    if os.environ.get("DATABASE_URL"):
        return None
    pg = EmbeddedPostgres(state_dir).start()
    os.environ["DATABASE_URL"] = pg.url
    return pg


def main(argv: list[str] | None = None) -> int:
    """`python -m infra.local.postgres [--state-dir DIR] [--migrate] -- CMD...`

    Runs CMD with DATABASE_URL pointing at the state dir's embedded Postgres, starting it if
    `make run` is not already running it (and stopping it afterwards in that case). This is
    how `make admin` reaches the local database.
    """
    import argparse
    import subprocess
    import sys

    from infra.local import environment

    p = argparse.ArgumentParser(prog="python -m infra.local.postgres", description=main.__doc__)
    p.add_argument("--state-dir", default=".ymera")
    p.add_argument("--migrate", action="store_true", help="run the migrations before CMD")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        p.error("a command to run is required (after --)")
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    pg = EmbeddedPostgres(environment.prepare_state_dir(args.state_dir))
    try:
        pg.start()
    except EmbeddedPostgresError as exc:
        log.error("%s", exc)
        return 1
    try:
        env = {**os.environ, "DATABASE_URL": pg.url}
        if args.migrate:
            from chalicelib.db.migrate import upgrade

            upgrade(pg.url)
        return subprocess.run(cmd, env=env, check=False).returncode
    finally:
        pg.stop()


if __name__ == "__main__":
    raise SystemExit(main())
