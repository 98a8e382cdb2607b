"""A SuperExec whose ClientApp processes start warm: the SuperNode side of ``bouquet deploy-local``.

Flower's SuperExec starts a fresh ``flwr-clientapp`` process for every message a SuperNode gets,
and each one pays python, torch and flwr imports plus torch's optimizer machinery (seconds of CPU,
every message, every node). Here the same Flower loop (``run_superexec``: acquire a task, launch
it) hands ClientApp tasks to a *zygote* instead: one process that imported those libraries once and
forks a child per task, which runs Flower's own ``run_clientapp`` with the task's token. Anything
else, or a zygote that is gone, falls back to Flower's subprocess launch.

The zygote is started from a code string (``python -c``) and never imports ``bouquet``: a child
must load the ClientApp from the run's FAB, and a ``bouquet`` package already in ``sys.modules``
would shadow the FAB's code with this installation's. It runs no torch op before forking (a
thread pool started in a parent does not survive ``fork``).

The SuperNode runs with ``--isolation process`` (Flower's mode for "a separate process runs the
apps"); this process is started beside it with ``--parent-pid`` set to the SuperNode and exits
with it.
"""

from __future__ import annotations

import argparse
import base64
import importlib
import json
import subprocess
import sys

from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult, SubprocessExecutor
from flwr.supercore.tls import validate_and_resolve_root_certificates

# what a ClientApp process spends its start-up on (torch._dynamo: what the first optimizer step
# imports); a name that does not import is reported and skipped
PRELOAD = ("numpy", "torch", "torch._dynamo", "torch.optim", "flwr.clientapp", "flwr.app",
           "flwr.supernode.runtime.run_clientapp", "scipy.optimize", "torch_geometric")

RUN_CLIENTAPP = "flwr.supernode.runtime.run_clientapp:run_clientapp"

_ZYGOTE = r"""
import base64, importlib, json, os, signal, sys
target_module, _, target_name = sys.argv[1].partition(":")
for name in sys.argv[2:]:
    try:
        __import__(name)
    except Exception as exc:  # an optional library: the child imports it itself if it needs it
        print(f"[warm-superexec] not preloaded: {name} ({exc!r})", flush=True)
if "bouquet" in sys.modules:
    sys.exit("[warm-superexec] the zygote imported bouquet, which would shadow the FAB's code")
run_clientapp = getattr(importlib.import_module(target_module), target_name)
signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps finished children
print("[warm-superexec] ready", flush=True)
for line in sys.stdin:
    task = json.loads(line)
    if os.fork() != 0:
        continue
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
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
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
"""


class WarmExecutor(SubprocessExecutor):
    """Flower's subprocess executor, except that ClientApp tasks are forked from a warm zygote."""

    def __init__(self, preload: tuple[str, ...] = PRELOAD, target: str = RUN_CLIENTAPP) -> None:
        self.zygote = subprocess.Popen([sys.executable, "-c", _ZYGOTE, target, *preload], stdin=subprocess.PIPE,
                                       text=True)

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        if spec.task_type != TaskType.CLIENT_APP or self.zygote.poll() is not None:
            print(f"[warm-superexec] task {spec.task_id}: launched cold (Flower's subprocess)", flush=True)
            return super().launch(spec)
        certificates = validate_and_resolve_root_certificates(spec.root_certificates_path, spec.insecure)
        task = {"runtime_api_address": spec.runtime_api_address, "token": spec.token, "insecure": spec.insecure,
                "certificates": None if certificates is None else base64.b64encode(certificates).decode(),
                "parent_pid": spec.parent_pid, "runtime_dependency_install": spec.runtime_dependency_install,
                "quiet": spec.suppress_output}
        try:
            self.zygote.stdin.write(json.dumps(task) + "\n")
            self.zygote.stdin.flush()
        except OSError:  # the zygote died between poll() and write: launch cold
            return super().launch(spec)
        print(f"[warm-superexec] task {spec.task_id}: forked warm", flush=True)
        return LaunchResult.accepted()

    def close(self) -> None:
        if self.zygote.poll() is None:
            self.zygote.stdin.close()  # EOF: the zygote's loop ends; running children finish their task
            try:
                self.zygote.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.zygote.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bouquet.deploy.superexec", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runtime-api-address", required=True, help="the SuperNode's Runtime API (host:port)")
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--root-certificates", default=None)
    parser.add_argument("--parent-pid", type=int, default=None, help="exit when this process (the SuperNode) exits")
    ns = parser.parse_args(argv)
    loop = importlib.import_module("flwr.supercore.superexec.run_superexec")

    # Flower's loop with this executor in place of the one it would build (flwr is pinned exactly;
    # tests/deploy/test_superexec.py fails if this hook moves)
    loop.get_executor = lambda *args, **kwargs: WarmExecutor()
    loop.run_superexec(runtime_api_address=ns.runtime_api_address, insecure=ns.insecure,
                       root_certificates_path=ns.root_certificates, parent_pid=ns.parent_pid,
                       runtime_dependency_install=False)


if __name__ == "__main__":
    main()
