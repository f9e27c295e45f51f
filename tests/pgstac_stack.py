"""A real pgstac STAC API for the tests: a throw-away PostgreSQL + PostGIS cluster, the pgstac schema
(``pypgstac migrate``), and stac-fastapi-pgstac under uvicorn, all subprocesses on 127.0.0.1.

``workflows/setup_pgstac.sh`` installs the pieces; :func:`missing_pieces` says which are absent.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from range_dist.testing.servers import free_port

#: set to 1 to make a missing PostGIS/pgstac a test failure instead of a skip (CI)
REQUIRE_ENV = "RANGE_DIST_REQUIRE_PGSTAC"
_PG_USER = "postgres"
_DB = "pgstac"


def pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/*/bin`` (Debian layout), or the folder of ``initdb`` on PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name)
                   if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing_pieces() -> list[str]:
    """What is absent to run the stack (empty when everything is there)."""
    missing = []
    bindir = pg_bindir()
    if bindir is None:
        missing.append("PostgreSQL server (initdb, pg_ctl)")
    else:
        share = subprocess.run([str(bindir / "pg_config"), "--sharedir"], capture_output=True, text=True)
        if share.returncode != 0 or not (Path(share.stdout.strip()) / "extension" / "postgis.control").exists():
            missing.append("PostGIS extension (apt-get install postgresql-15-postgis-3)")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        missing.append("runuser (initdb refuses root)")
    for module, package in (("pypgstac", "pypgstac[psycopg]"), ("psycopg", "pypgstac[psycopg]"),
                            ("stac_fastapi.pgstac", "stac-fastapi-pgstac"), ("uvicorn", "uvicorn")):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(f"Python package {package}")
    if missing:
        missing.append("(bash workflows/setup_pgstac.sh installs them)")
    return missing


def _venv_script(name: str) -> str:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name) or name


class PgstacStack:
    """PostgreSQL + pgstac + stac-fastapi-pgstac over a collection and an ndjson of items.

    The cluster lives in a temporary folder owned by ``postgres`` when run as root (initdb refuses
    root), trusts local connections, and listens on 127.0.0.1 only, with its socket in that folder.
    """

    def __init__(self, collection: Path, items: Path, startup_s: float = 60.0) -> None:
        self.collection, self.items, self.startup_s = Path(collection), Path(items), startup_s
        bindir = pg_bindir()
        if bindir is None:
            raise RuntimeError("no PostgreSQL server found")
        self.bindir = bindir
        self.pg_port, self.api_port = free_port(), free_port()
        self.root = Path(tempfile.mkdtemp(prefix="range-pgstac-"))
        self.data, self.log = self.root / "data", self.root / "postgres.log"
        self.api_log = self.root / "uvicorn.log"
        self.api: subprocess.Popen[bytes] | None = None
        self._pg_started = False

    @property
    def dsn(self) -> str:
        return f"postgresql://{_PG_USER}@127.0.0.1:{self.pg_port}/{_DB}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def _as_owner(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", _PG_USER, "--", *args] if os.geteuid() == 0 else args

    def _run(self, args: list[str], what: str) -> str:
        done = subprocess.run(args, capture_output=True, text=True, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr[-2000:] or done.stdout[-2000:]}")
        return done.stdout

    def start(self) -> PgstacStack:
        """Create and start the cluster, migrate, load, register queryables, start the API.

        Raises:
            RuntimeError: a step failed (its output is in the message); the caller should :meth:`stop`.
        """
        if os.geteuid() == 0:  # the postgres user must own the cluster folder
            import pwd

            entry = pwd.getpwnam(_PG_USER)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run(self._as_owner([str(self.bindir / "initdb"), "-D", str(self.data), "-U", _PG_USER, "-A", "trust",
                                  "-E", "UTF8", "--locale=C", "--no-sync"]), "initdb")
        options = f"-p {self.pg_port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_started = True
        self._run(self._as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o",
                                  options, "-w", "-t", str(int(self.startup_s)), "start"]), "pg_ctl start")
        self._run(self._as_owner([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U",
                                  _PG_USER, _DB]), "createdb")
        pypgstac = _venv_script("pypgstac")
        self._run([pypgstac, "migrate", "--dsn", self.dsn], "pypgstac migrate")
        self._run([pypgstac, "load", "collections", str(self.collection), "--dsn", self.dsn, "--method", "insert"],
                  "pypgstac load collections")
        self._run([pypgstac, "load", "items", str(self.items), "--dsn", self.dsn, "--method", "insert"],
                  "pypgstac load items")
        self._register_queryables()
        self._start_api()
        return self

    def _register_queryables(self) -> None:
        # pgstac only knows id/geometry/datetime; without a numeric queryable, CQL2 would compare
        # eo:cloud_cover as text ("5" <= "20" is false)
        import psycopg

        definition = json.dumps({"title": "Cloud cover", "type": "number", "minimum": 0, "maximum": 100})
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("SET search_path TO pgstac, public")  # pgstac's triggers call unqualified functions
            conn.execute("DELETE FROM queryables WHERE name = 'eo:cloud_cover'")
            conn.execute("INSERT INTO queryables (name, definition, property_wrapper) "
                         "VALUES ('eo:cloud_cover', %s::jsonb, 'to_float')", [definition])

    def _start_api(self) -> None:
        env = {**os.environ, "PGHOST": "127.0.0.1", "PGPORT": str(self.pg_port), "PGUSER": _PG_USER,
               "PGPASSWORD": "unused-trust-auth", "PGDATABASE": _DB,
               # the same settings under the names of stac-fastapi-pgstac < 4
               "POSTGRES_HOST_READER": "127.0.0.1", "POSTGRES_HOST_WRITER": "127.0.0.1",
               "POSTGRES_PORT": str(self.pg_port), "POSTGRES_USER": _PG_USER, "POSTGRES_PASS": "unused-trust-auth",
               "POSTGRES_DBNAME": _DB, "DB_MIN_CONN_SIZE": "1", "DB_MAX_CONN_SIZE": "4"}
        with open(self.api_log, "wb") as log:
            self.api = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "stac_fastapi.pgstac.app:create_app", "--factory", "--host",
                 "127.0.0.1", "--port", str(self.api_port), "--log-level", "warning"],
                env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + self.startup_s
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/conformance", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                if self.api.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError(f"stac-fastapi-pgstac did not start: {self.api_log.read_text()[-3000:]}")

    def stop(self) -> None:
        """Stop the API and the cluster and delete the folder (idempotent)."""
        if self.api is not None and self.api.poll() is None:
            os.killpg(self.api.pid, signal.SIGTERM)
            try:
                self.api.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.api.pid, signal.SIGKILL)
                self.api.wait(5)
        if self._pg_started:
            subprocess.run(self._as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                                           "stop"]), capture_output=True, cwd=self.root)
            self._pg_started = False
        shutil.rmtree(self.root, ignore_errors=True)
