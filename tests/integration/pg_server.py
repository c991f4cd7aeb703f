"""A throwaway PostgreSQL server on loopback, for the tests of the Dagster instance in PostgreSQL.

``PostgresServer``: ``initdb`` a new cluster in a fresh temporary directory (UTF-8, no locale, superuser
``postgres``; ``host`` connections from 127.0.0.1 only, ``trust`` by default or ``scram-sha-256`` with
``password=``), start it with ``pg_ctl`` on a free 127.0.0.1 port (no Unix socket, ``fsync`` off: the data
is thrown away), create the database ``db_name`` and give its ``url`` (``postgresql+psycopg2://``, the
driver SQLAlchemy 2.x needs to be told about). ``stop()`` stops the server (``pg_ctl stop -m fast``, then
``immediate``, then SIGKILL) and removes the directory; a context manager does it on every exit, a failing
test or an interrupt included, and an ``atexit`` hook catches a server that was never stopped.

The binaries are found on ``PATH`` (``initdb``, ``pg_ctl``) or in ``/usr/lib/postgresql/<version>/bin``.
``initdb`` and ``postgres`` refuse to run as root: under root the cluster belongs to an unprivileged system
account (``postgres`` where it exists, else ``nobody``), every PostgreSQL command runs as that account
(``subprocess``'s ``user=``/``group=``), and the directory is made in the system temporary directory (the
account cannot enter pytest's ``/tmp/pytest-of-root``). Every step has a timeout; every failure is a
``RuntimeError`` that ends with the tail of the server log (or of the command's output).
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

UNPRIVILEGED_ACCOUNTS = ("postgres", "nobody")


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL binaries, or an account allowed to run them, are not on this machine."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary(name: str) -> str:
    """``name`` (``initdb``, ``pg_ctl``) on ``PATH``, else in the newest ``/usr/lib/postgresql/*/bin``."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if candidates:
        return candidates[-1]
    raise PostgresUnavailable(f"`{name}` is neither on PATH nor in /usr/lib/postgresql/*/bin: install the PostgreSQL "
                              "server binaries (Debian/Ubuntu: `apt-get install postgresql`)")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class PostgresServer:
    """A PostgreSQL cluster on 127.0.0.1 in a temporary directory (module docstring)."""

    superuser = "postgres"
    host = "127.0.0.1"

    def __init__(self, *, db_name: str = "dagster", password: str | None = None, start_timeout: float = 30.0,
                 command_timeout: float = 60.0, start_attempts: int = 3) -> None:
        self.db_name = db_name
        self.password = password
        self.start_timeout = start_timeout
        self.command_timeout = command_timeout
        self.start_attempts = start_attempts
        self.initdb = find_binary("initdb")
        self.pg_ctl = find_binary("pg_ctl")
        self.account = self._account()  # (name, uid, gid) to run as under root, else None
        self.root: Path | None = None
        self.port: int | None = None
        self.started = False

    # ------------------------------------------------------------------------------------------ paths
    @property
    def data_dir(self) -> Path:
        assert self.root is not None, "server not created"
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        assert self.root is not None, "server not created"
        return self.root / "postgres.log"

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines) if self.root is not None else "(no log)"

    # ------------------------------------------------------------------------------------------ connection
    @property
    def url(self) -> str:
        """The SQLAlchemy URL of ``db_name`` (``postgresql+psycopg2://postgres[:password]@127.0.0.1:<port>/<db>``)."""
        return self.url_for(self.db_name)

    def url_for(self, db_name: str) -> str:
        assert self.port is not None, "server not started"
        userinfo = quote(self.superuser, safe="")
        if self.password:
            userinfo += ":" + quote(self.password, safe="")
        return f"postgresql+psycopg2://{userinfo}@{self.host}:{self.port}/{db_name}"

    def connect(self, db_name: str | None = None):
        """A psycopg2 connection to ``db_name`` (default: ``self.db_name``); the caller closes it."""
        import psycopg2

        assert self.port is not None, "server not started"
        return psycopg2.connect(host=self.host, port=self.port, user=self.superuser, password=self.password or "",
                                dbname=db_name or self.db_name, connect_timeout=10)

    # ------------------------------------------------------------------------------------------ running commands
    @staticmethod
    def _account() -> tuple[str, int, int] | None:
        if os.geteuid() != 0:
            return None
        for name in UNPRIVILEGED_ACCOUNTS:
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                continue
            if entry.pw_uid != 0:
                return name, entry.pw_uid, entry.pw_gid
        raise PostgresUnavailable(f"running as root, and none of the accounts {UNPRIVILEGED_ACCOUNTS} exists to run "
                                  "initdb/postgres as (PostgreSQL refuses to run as root)")

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C", TZ="UTC")
        if self.account is not None:
            name, _, _ = self.account
            env.update(USER=name, LOGNAME=name, HOME=str(self.root))
        return env

    def _run(self, args: list[str], *, timeout: float | None = None, check: bool = True,
             what: str = "") -> subprocess.CompletedProcess:
        kwargs = {}
        if self.account is not None:
            _, uid, gid = self.account
            kwargs = dict(user=uid, group=gid, extra_groups=[])
        try:
            result = subprocess.run(args, cwd=self.root, env=self._env(), stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    timeout=timeout or self.command_timeout, **kwargs)
        except subprocess.TimeoutExpired as exc:
            output = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else (exc.output or "")
            raise RuntimeError(f"{what or args[0]} did not finish within {exc.timeout:g} s; its output ends "
                               f"with:\n{output[-4000:]}\nthe server log ends with:\n{self.log_tail()}") from None
        if check and result.returncode != 0:
            raise RuntimeError(f"{what or args[0]} failed with code {result.returncode}: {' '.join(args)}\n"
                               f"its output ends with:\n{result.stdout[-4000:]}\n"
                               f"the server log ends with:\n{self.log_tail()}")
        return result

    # ------------------------------------------------------------------------------------------ life
    def start(self) -> PostgresServer:
        # the system temp dir, not pytest's tmp_path: under root the cluster's account must be able to enter it
        self.root = Path(tempfile.mkdtemp(prefix="instsel-pg-"))
        atexit.register(self.stop)
        try:
            self._initdb()
            self._start_server()
            self._create_database()
        except BaseException:
            self.stop()  # never leave a server or a directory behind (an interrupt included)
            raise
        return self

    def _initdb(self) -> None:
        assert self.root is not None
        if self.account is not None:
            _, uid, gid = self.account
            os.chown(self.root, uid, gid)
        self.root.chmod(0o700)
        args = [self.initdb, "-D", str(self.data_dir), "--username", self.superuser, "--encoding", "UTF8",
                "--no-locale", "--no-sync", "--no-instructions", "--auth-local", "reject"]
        if self.password:
            pwfile = self.root / "pwfile"
            pwfile.write_text(self.password + "\n", encoding="utf-8")
            pwfile.chmod(0o600)
            if self.account is not None:
                os.chown(pwfile, self.account[1], self.account[2])
            args += ["--auth-host", "scram-sha-256", "--pwfile", str(pwfile)]
        else:
            args += ["--auth-host", "trust"]
        try:
            self._run(args, what="initdb")
        finally:
            (self.root / "pwfile").unlink(missing_ok=True)
        # only IPv4 loopback may connect: drop initdb's IPv6 and replication lines
        hba = self.data_dir / "pg_hba.conf"
        method = "scram-sha-256" if self.password else "trust"
        hba.write_text(f"host all all 127.0.0.1/32 {method}\n", encoding="utf-8")
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# throwaway test cluster\n"
                       "listen_addresses = '127.0.0.1'\n"
                       "unix_socket_directories = ''\n"
                       "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                       "max_connections = 50\nshared_buffers = 32MB\n")

    def _start_server(self) -> None:
        last_error = ""
        for _ in range(self.start_attempts):  # a free port can be taken between choosing it and binding it
            port = free_port()
            result = self._run([self.pg_ctl, "start", "-D", str(self.data_dir), "-l", str(self.log_path), "-w",
                                "-t", str(int(self.start_timeout)), "-o", f"-p {port}"],
                               timeout=self.start_timeout + 15, check=False, what="pg_ctl start")
            if result.returncode == 0:
                self.port = port
                self.started = True
                return
            last_error = result.stdout[-2000:]
            if "could not bind" not in self.log_tail(200) and "already in use" not in self.log_tail(200):
                break
            self._stop_server()
        raise RuntimeError(f"PostgreSQL did not start on 127.0.0.1 (pg_ctl: {last_error.strip()}); "
                           f"the server log ends with:\n{self.log_tail()}")

    def _create_database(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        last_error: Exception | None = None
        while True:
            try:
                connection = self.connect("postgres")
                break
            except Exception as exc:  # psycopg2.OperationalError: the server may still be opening
                last_error = exc
                if time.monotonic() > deadline:
                    raise RuntimeError(f"could not connect to PostgreSQL on {self.host}:{self.port} within "
                                       f"{self.start_timeout:g} s ({exc}); the server log ends with:\n"
                                       f"{self.log_tail()}") from last_error
                time.sleep(0.1)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute("SET statement_timeout = '30s'")
                cursor.execute(f'CREATE DATABASE "{self.db_name}"')
        finally:
            connection.close()

    def _stop_server(self) -> None:
        if self.root is None or not (self.data_dir / "postmaster.pid").exists():
            return
        for mode in ("fast", "immediate"):
            result = self._run([self.pg_ctl, "stop", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "20"],
                               timeout=30, check=False, what=f"pg_ctl stop -m {mode}")
            if result.returncode == 0 or not (self.data_dir / "postmaster.pid").exists():
                return
        try:  # last resort: the postmaster's pid is the first line of postmaster.pid
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass

    def stop(self) -> None:
        """Stop the server and remove its directory; safe to call more than once."""
        atexit.unregister(self.stop)
        try:
            self._stop_server()
        except RuntimeError:
            pass
        finally:
            self.started = False
            root, self.root = self.root, None
            if root is not None:
                shutil.rmtree(root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
