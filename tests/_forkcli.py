"""``python -m parjobs.cli ...`` as a real process forked from a warm interpreter.

A fresh ``python -m parjobs.cli`` costs about 0.45 s of CPU before it parses its arguments
(the interpreter, trio, rich, parjobs), and the command-line tests start hundreds of them:
on the 2 cores of CI that start-up was a good part of the suite. Each test process instead
starts one server (`serve`, on first use) that has imported all of that, and forks it per
command. A forked command is still a real process of its own: its pid, argv, environment,
working directory, stdin/stdout/stderr pipes, exit status (negative: the signal that ended
it, kill -9 and Ctrl-C included) and signal handlers are its own; only its start-up is not
tested here, and tests/cli/test_startup.py starts real interpreters for that.

`run` is `subprocess.run(..., capture_output=True, text=True)` and `Forked` the part of
`subprocess.Popen` the tests use. The server holds no thread, reads every environment
variable at call time as parjobs does, and ends when its test process closes its stdin.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import IO, Any

#: What the server imports before it forks (parjobs reads its environment at call time).
PRELOAD = (
    "trio",
    "rich.console",
    "rich.live",
    "rich.progress",
    "rich.table",
    "PIL.Image",
    "parjobs",
    "parjobs.ops",
    "parjobs.cli",
    "parjobs.cli._commands",
    "parjobs.cli._render",
    "parjobs.cli._session",
    "parjobs.server",  # `parjobs serve` (the [server] extra)
    "httpx",  # `parjobs --server URL`
)


# -- the server (its own process) -----------------------------------------------------------


def serve(path: str) -> None:
    """Import `PRELOAD`, listen on the Unix socket ``path``; per request fork a command and
    answer its pid, then its exit code once it ends."""
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind(path)
    listener.listen(64)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ, "accept")
    sel.register(wake_r, selectors.EVENT_READ, "reap")
    sel.register(sys.stdin, selectors.EVENT_READ, "parent")
    waiting: dict[int, socket.socket] = {}
    print("READY", flush=True)
    while True:
        for key, _ in sel.select():
            if key.data == "parent":  # the test process is gone (or done)
                return
            if key.data == "accept":
                conn, _ = listener.accept()
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
                pid = os.fork()
                if pid == 0:
                    owned = [listener, conn, *waiting.values(), sel, wake_r, wake_w]
                    _command(json.loads(msg), fds, owned)
                for fd in fds:
                    os.close(fd)
                conn.send(str(pid).encode())
                waiting[pid] = conn
            else:
                os.read(wake_r, 4096)
                while waiting:
                    pid, status = os.waitpid(-1, os.WNOHANG)
                    if pid == 0:
                        break
                    conn = waiting.pop(pid)
                    with contextlib.suppress(OSError):
                        conn.send(str(os.waitstatus_to_exitcode(status)).encode())
                    conn.close()


def _command(request: dict[str, Any], fds: list[int], owned: list[Any]) -> None:
    """In the forked child: become ``python -m MODULE ARGS`` (or ``python -c CODE ARGS``,
    ``python SCRIPT.py ARGS``) in the request's directory and
    environment, on the given stdin/stdout/stderr, and exit as that interpreter would. The
    server's sockets and descriptors (``owned``) are closed first: none leaks into it."""
    import runpy
    import traceback

    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for thing in owned:
        if isinstance(thing, int):
            os.close(thing)
        else:
            thing.close()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=os.isatty(1))  # type: ignore[union-attr]
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if request["code"] is not None:  # python -c CODE ARGS
            sys.argv = ["-c", *request["args"]]
            exec(compile(request["code"], "<string>", "exec"), {"__name__": "__main__"})
        elif request["module"].endswith(".py"):  # python SCRIPT ARGS
            sys.argv = [request["module"], *request["args"]]
            sys.path.insert(0, os.path.dirname(os.path.abspath(request["module"])))
            runpy.run_path(request["module"], run_name="__main__")
        else:  # python -m MODULE ARGS
            sys.argv = [request["module"], *request["args"]]
            runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except KeyboardInterrupt:  # as the interpreter ends on an uncaught Ctrl-C: by SIGINT
        traceback.print_exc()
        _flush()
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(BaseException):
            atexit._run_exitfuncs()
        _flush()
        os._exit(code)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BaseException):
            stream.flush()


# -- the client (in the test process) -------------------------------------------------------

_server: dict[str, Any] = {}
_lock = threading.Lock()


def _address() -> str:
    """The socket of this process's server, started on first use."""
    with _lock:
        if _server.get("pid") != os.getpid():
            root = tempfile.mkdtemp(prefix="parjobs-forkcli-")
            path = os.path.join(root, "sock")
            proc = subprocess.Popen(
                [sys.executable, __file__, path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C meant for a test's group never reaches it
            )
            assert proc.stdout is not None
            if proc.stdout.readline() != b"READY\n":
                raise RuntimeError(f"the CLI fork server did not start ({proc.wait()})")
            _server.update(pid=os.getpid(), proc=proc, path=path)
            atexit.register(_stop, proc, root)
        return str(_server["path"])


def _stop(proc: subprocess.Popen[bytes], root: str) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    with contextlib.suppress(OSError):
        os.unlink(os.path.join(root, "sock"))
        os.rmdir(root)


class Forked:
    """``python -m module *args`` (``python -c code *args`` when ``code`` is given, ``python
    module *args`` when ``module`` ends in ``.py``) forked by the server, with
    `subprocess.Popen`'s ``pid``, ``args``,
    ``returncode``, ``stdout``/``stderr`` (text pipes, or None when given a file),
    `poll`, `wait`, `communicate`, `send_signal`, `kill` and `terminate`."""

    def __init__(
        self,
        args: list[str],
        *,
        module: str = "parjobs.cli",
        code: str | None = None,
        cwd: str | os.PathLike[str] | None = None,
        env: dict[str, str] | None = None,
        stdin: int | IO[Any] | None = None,
        stdout: int | IO[Any] | None = subprocess.PIPE,
        stderr: int | IO[Any] | None = subprocess.PIPE,
    ) -> None:
        if code is not None:
            self.args = [sys.executable, "-c", code, *args]
        elif module.endswith(".py"):
            self.args = [sys.executable, module, *args]
        else:
            self.args = [sys.executable, "-m", module, *args]
        self.returncode: int | None = None
        ends: list[int] = []  # the child's ends, closed here once sent
        mine: list[tuple[str, int]] = []
        for name, given in (("stdin", stdin), ("stdout", stdout), ("stderr", stderr)):
            if given == subprocess.PIPE:
                r, w = os.pipe()
                child, own = (r, w) if name == "stdin" else (w, r)
                ends.append(child)
                mine.append((name, own))
            elif given is None or given == subprocess.DEVNULL:
                ends.append(os.open(os.devnull, os.O_RDWR))
            else:
                ends.append(os.dup(given if isinstance(given, int) else given.fileno()))
        self.stdin: IO[str] | None = None
        self.stdout: IO[str] | None = None
        self.stderr: IO[str] | None = None
        for name, fd in mine:
            setattr(self, name, open(fd, "w" if name == "stdin" else "r"))  # noqa: SIM115
        request = {
            "module": module,
            "code": code,
            "args": list(args),
            "cwd": os.fspath(cwd) if cwd is not None else os.getcwd(),
            "env": dict(os.environ if env is None else env),
        }
        self._conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._conn.connect(_address())
            socket.send_fds(self._conn, [json.dumps(request).encode()], ends)
            self.pid = int(self._conn.recv(64))
        finally:
            for fd in ends:
                os.close(fd)

    def poll(self) -> int | None:
        if self.returncode is None:
            self._conn.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                self._ended(self._conn.recv(64))
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self._conn.settimeout(timeout)
            try:
                self._ended(self._conn.recv(64))
            except TimeoutError:
                raise subprocess.TimeoutExpired(self.args, timeout or 0) from None
        assert self.returncode is not None
        return self.returncode

    def _ended(self, answer: bytes) -> None:
        if not answer:
            raise RuntimeError(f"the CLI fork server lost {self.args}")
        self.returncode = int(answer)
        self._conn.close()

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """Everything the command writes to its pipes until it ends (a `wait`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if self.stdin is not None:
            self.stdin.close()
        out: dict[str, list[str]] = {"stdout": [], "stderr": []}
        readers = [
            threading.Thread(target=lambda n=name, f=f: out[n].append(f.read()), daemon=True)
            for name, f in (("stdout", self.stdout), ("stderr", self.stderr))
            if f is not None
        ]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
        self.wait(None if deadline is None else max(0.01, deadline - time.monotonic()))
        for f in (self.stdout, self.stderr):
            if f is not None:
                f.close()
        return "".join(out["stdout"]), "".join(out["stderr"])

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            # The server may have reaped the child before its exit message reaches us;
            # a pid already gone has nothing left to signal.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


def run(
    args: list[str],
    *,
    module: str = "parjobs.cli",
    code: str | None = None,
    cwd: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``subprocess.run([python, -m, module, *args], capture_output=True, text=True)``
    (or ``-c code``, see `Forked`), forked; stdin is /dev/null."""
    proc = Forked(args, module=module, code=code, cwd=cwd, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        proc.kill()
        raise
    assert proc.returncode is not None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


if __name__ == "__main__":
    serve(sys.argv[1])
