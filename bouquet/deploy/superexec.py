"""A SuperExec whose ClientApp processes start warm: the SuperNode side of ``bouquet deploy-local``.

Flower's SuperExec starts a fresh ``flwr-clientapp`` process for every message a SuperNode gets,
and each one pays python, torch and flwr imports plus torch's optimizer machinery (seconds of CPU,
every message, every node). Here the same Flower loop (``run_superexec``: acquire a task, launch
it) hands ClientApp tasks to a *zygote* instead: one process that imported those libraries once and
forks a child per task, which runs Flower's own ``run_clientapp`` with the task's token (sent over a
pipe, not on a command line). Anything else, or a zygote that does not answer, falls back to
Flower's subprocess launch (whose command line carries the token, as Flower's SuperExec's always does).

A child also waits at most ``--pull-wait`` seconds (0.2) before asking again for a message's
objects that have not reached its SuperNode yet (Flower: 1 s, then 2, 4, ... 10 s; flwr hands the
task over before the objects arrive, so that wait was in most messages).

The zygote is started from a code string (``python -c``) and never imports ``bouquet``: a child
must load the ClientApp from the run's FAB, and a ``bouquet`` package already in ``sys.modules``
would shadow the FAB's code with this installation's. It runs no torch op before forking (torch's
thread pool does not survive ``fork``; numpy's OpenBLAS and jemalloc threads have fork handlers), and
each child gets a fresh numpy seed, /dev/null as stdin and default signal handlers. The zygote's
heap is frozen for the garbage collector before each fork, and a child ends as an interpreter does
(non-daemon threads joined, atexit handlers run, output flushed) but without tearing down the heap
it inherited: that teardown cost 1.3 s of CPU per task, and finished children still running it
piled up on the cores round after round.

The SuperNode runs with ``--isolation process`` (Flower's mode for "a separate process runs the
apps"); this process is started beside it with ``--parent-pid`` set to the SuperNode and exits
with it. The zygote ends when this process does (its task pipe closes). A child stops when this
process ends or closes its executor, whatever became of the zygote: it holds the read end of a
pipe whose write end only this process has, and at its EOF it gets SIGINT (as Flower's ClientApp
on its SuperExec's death), and is ended ``STOP_GRACE_S`` later if it has not stopped. Flower's own
watch of the SuperExec's pid takes a SuperExec that died but was not reaped yet for alive, and such
a child retried its dead SuperNode for as long as that lasted.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import os
import select
import subprocess
import sys

from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult, SubprocessExecutor
from flwr.supercore.tls import validate_and_resolve_root_certificates

from bouquet.federation import object_pull_defaults

# what a ClientApp process spends its start-up on (torch._dynamo: what the first optimizer step
# imports; sklearn: the digits and breast-cancer loaders and the stratified split, 0.4 + 0.4 s;
# flwr_datasets: the natural partitioner, 0.7 s); a name that does not import is reported and skipped
PRELOAD = ("numpy", "torch", "torch._dynamo", "torch.optim", "flwr.clientapp", "flwr.app",
           "flwr.supernode.runtime.run_clientapp", "scipy.optimize", "torch_geometric", "sklearn.datasets",
           "sklearn.model_selection", "flwr_datasets")

RUN_CLIENTAPP = "flwr.supernode.runtime.run_clientapp:run_clientapp"

_ZYGOTE = r"""
import atexit, base64, gc, importlib, json, os, signal, sys, threading, time
ack = int(sys.argv[1])  # one line back per task: the child's pid, or 0 if no child was started
target_module, _, target_name = sys.argv[2].partition(":")
pull_defaults = json.loads(sys.argv[3])  # waits for a message's objects (bouquet.federation.object_pull_defaults)
stop_grace = float(sys.argv[4])  # seconds a child has to stop on SIGINT once its SuperExec is gone
lifeline = int(sys.argv[5])  # read end of a pipe whose write end only the SuperExec holds: EOF = it is gone
signal.signal(signal.SIGINT, signal.SIG_IGN)  # it ends on EOF, when its SuperExec closes the pipe
for name in sys.argv[6:]:
    try:
        __import__(name)
    except Exception as exc:  # an optional library: the child imports it itself if it needs it
        print(f"[warm-superexec] not preloaded: {name} ({exc!r})", flush=True)
if pull_defaults:  # as bouquet.federation.cap_object_pulls, which this process cannot import
    pulls = importlib.import_module("flwr.supercore.inflatable.inflatable_utils")
    for fn in (pulls.pull_objects, pulls.pull_and_inflate_object_from_tree):
        if not set(pull_defaults) <= set(fn.__kwdefaults__ or {}):
            sys.exit(f"[warm-superexec] {fn.__name__} has no {sorted(pull_defaults)}: this flwr is not the pinned one")
        fn.__kwdefaults__.update(pull_defaults)
if "bouquet" in sys.modules:
    sys.exit("[warm-superexec] the zygote imported bouquet, which would shadow the FAB's code")
run_clientapp = getattr(importlib.import_module(target_module), target_name)
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished children
print("[warm-superexec] ready", flush=True)
for line in sys.stdin:
    try:
        task = json.loads(line)
        gc.freeze()  # the preloaded heap: no collection in a child walks it (and copies its pages)
        pid = os.fork()
    except Exception as exc:  # a bad line or no fork: say so; the SuperExec launches this task cold
        print(f"[warm-superexec] no child for a task: {exc!r}", flush=True)
        os.write(ack, b"0\n")
        continue
    if pid:
        os.write(ack, f"{pid}\n".encode())
        continue
    # the child: none of the zygote's plumbing, fresh randomness, default signals
    os.close(ack)
    null_in = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null_in, 0)
    sys.stdin = open(os.devnull)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()

    def orphaned():
        # Flower's own watch (parent_pid: the SuperExec's pid) takes a SuperExec that died but is not
        # reaped yet (a zombie) for alive; the lifeline's EOF comes as the SuperExec's process ends
        # (or closes it), whatever becomes of the zygote. Stop as Flower's watch does (SIGINT to the
        # main thread: "Task stopped"), then for sure.
        while os.read(lifeline, 1):
            pass
        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
        time.sleep(stop_grace)
        os._exit(1)

    threading.Thread(target=orphaned, daemon=True, name="warm-superexec-lifeline").start()
    code = 1
    try:
        if task.pop("quiet"):
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 1)
            os.dup2(null, 2)
        certificates = task.pop("certificates")
        run_clientapp(certificates=None if certificates is None else base64.b64decode(certificates), **task)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        import traceback
        traceback.print_exc()
    # What a normal exit does that matters, in its order (threading's exit hooks, which shut down
    # concurrent.futures pools, then the non-daemon threads joined; atexit handlers; buffered output
    # flushed), without the interpreter's teardown of the inherited heap: a full collection and
    # every module cleared cost 1.3 s of CPU per task (0.4 s with the freeze above).
    threading._shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(code)
"""

ACK_TIMEOUT_S = 120.0  # the first task may wait for the zygote's imports
# a child whose SuperExec is gone gets SIGINT, then this long to stop before it is ended (Flower's
# graceful exit pushes the task's status once, then force-exits after 5 s)
STOP_GRACE_S = 15.0


class WarmExecutor(SubprocessExecutor):
    """Flower's subprocess executor, except that ClientApp tasks are forked from a warm zygote.

    A task is reported accepted only once the zygote says which child runs it; without that
    answer the zygote is killed (so no token can run twice) and the task, and every later one,
    launches cold."""

    def __init__(self, preload: tuple[str, ...] = PRELOAD, target: str = RUN_CLIENTAPP, pull_wait: float = 0.2,
                 stop_grace: float = STOP_GRACE_S) -> None:
        read, write = os.pipe()
        life_read, self._lifeline = os.pipe()  # the write end stays here (never written): see _ZYGOTE
        try:
            # -P: the current folder never shadows a module; python -c so that bouquet is not imported
            pulls = object_pull_defaults(pull_wait) if pull_wait > 0 else {}
            self.zygote = subprocess.Popen([sys.executable, "-P", "-c", _ZYGOTE, str(write), target, json.dumps(pulls),
                                            str(stop_grace), str(life_read), *preload],
                                           stdin=subprocess.PIPE, text=True, pass_fds=(write, life_read))
        finally:
            os.close(write)
            os.close(life_read)
        self._acks = os.fdopen(read, "r")

    def _fork(self, task: dict[str, object]) -> int:
        """The child's pid, or 0 when the zygote did not start one (then it is gone or refused)."""
        if self.zygote.poll() is not None:
            return 0
        try:
            self.zygote.stdin.write(json.dumps(task) + "\n")
            self.zygote.stdin.flush()
            ready, _, _ = select.select([self._acks], [], [], ACK_TIMEOUT_S)
            answer = self._acks.readline() if ready else ""
        except OSError:
            answer = ""
        if not answer.strip().isdigit():  # no answer: it may still read the line later, so stop it now
            self.zygote.kill()
            self.zygote.wait()
            return 0
        return int(answer)

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        pid = 0
        if spec.task_type == TaskType.CLIENT_APP:
            try:
                certificates = validate_and_resolve_root_certificates(spec.root_certificates_path, spec.insecure)
            except SystemExit:  # Flower's own launch reports a bad path in the task's process, not here
                certificates = None
            else:
                pid = self._fork({"runtime_api_address": spec.runtime_api_address, "token": spec.token,
                                  "insecure": spec.insecure,
                                  "certificates": None if certificates is None else base64.b64encode(certificates).decode(),
                                  "parent_pid": spec.parent_pid,
                                  "runtime_dependency_install": spec.runtime_dependency_install,
                                  "quiet": spec.suppress_output})
        if not pid:
            print(f"[warm-superexec] task {spec.task_id}: launched cold (Flower's subprocess)", flush=True)
            return super().launch(spec)
        print(f"[warm-superexec] task {spec.task_id}: forked warm (pid {pid})", flush=True)
        return LaunchResult.accepted()

    def close(self) -> None:
        if self.zygote.poll() is None:
            self.zygote.stdin.close()  # EOF: the zygote's loop ends
            try:
                self.zygote.wait(timeout=5)
            except (subprocess.TimeoutExpired, KeyboardInterrupt):  # a second Ctrl-C / stop signal: do not linger
                self.zygote.kill()
        self._acks.close()
        if self._lifeline is not None:  # running children stop, as Flower's do when their SuperExec ends
            os.close(self._lifeline)
            self._lifeline = None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bouquet.deploy.superexec", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API (host:port)")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates", default=None)
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the SuperNode) exits")
    parser.add_argument("--superexec-auth-secret-file", default=None,
                        help="the secret the SuperNode was given (its Runtime API then serves tasks only to us)")
    parser.add_argument("--pull-wait", type=float, default=0.2,
                        help="a ClientApp's longest wait between asks for a message's objects that have not reached "
                             "its SuperNode yet (Flower: 1 s doubling to 10 s; 0 keeps Flower's)")
    ns = parser.parse_args(argv)
    if not 0 <= ns.pull_wait <= 60:
        parser.error(f"--pull-wait {ns.pull_wait:g}: expected seconds in [0, 60]")
    from flwr.supercore.auth import load_superexec_auth_secret  # noqa: PLC0415
    from flwr.supercore.utils import disable_process_dumping  # noqa: PLC0415

    disable_process_dumping(strict=False)  # as flower-superexec: this process holds every task's token
    loop = importlib.import_module("flwr.supercore.superexec.run_superexec")

    # Flower's loop with this executor in place of the one it would build (flwr is pinned exactly;
    # tests/deploy/test_superexec.py fails if this hook moves)
    loop.get_executor = lambda *args, **kwargs: WarmExecutor(pull_wait=ns.pull_wait)
    loop.run_superexec(runtime_api_address=ns.runtime_api_address, insecure=ns.insecure,
                       root_certificates_path=ns.root_certificates, parent_pid=ns.parent_pid,
                       superexec_auth_secret=load_superexec_auth_secret(ns.superexec_auth_secret_file),
                       runtime_dependency_install=False)


if __name__ == "__main__":
    main()
