"""The warm SuperExec (``bouquet.deploy.superexec``): ClientApp tasks forked from a zygote that
preloaded the heavy libraries and never imported ``bouquet`` (the FAB's code must win), other
tasks and a dead zygote falling back to Flower's subprocess launch."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult, SubprocessExecutor

from bouquet.deploy.local import _alive
from bouquet.deploy.superexec import PRELOAD, WarmExecutor

PROBE = '''
import atexit, gc, json, os, sys, threading, time
def run(**task):
    if task["token"].endswith("exit.json"):  # what a normal exit would finish: a late thread, an atexit handler
        late = threading.Thread(target=lambda: (time.sleep(0.3), open(task["token"] + ".thread", "w").write("x")))
        late.start()
        global POOL  # a pool left running, as a library may keep one: a normal exit shuts it down
        from concurrent.futures import ThreadPoolExecutor
        POOL = ThreadPoolExecutor(1)
        POOL.submit(time.sleep, 0.1)
        atexit.register(lambda: open(task["token"] + ".atexit", "w").write(str(late.is_alive())))
        sys.stdout.write("unflushed line from the child")
    open(task["token"], "w").write(json.dumps({
        "frozen": gc.get_freeze_count(),
        "bouquet": sorted(m for m in sys.modules if m == "bouquet" or m.startswith("bouquet.")),
        "numpy": "numpy" in sys.modules, "pid": os.getpid(), "ppid": os.getppid(), "task": sorted(task),
        "stdin": os.readlink("/proc/self/fd/0"), "draw": __import__("numpy").random.random(),
        "pull_defaults": {k: v for k, v in sys.modules["flwr.supercore.inflatable.inflatable_utils"]
                          .pull_and_inflate_object_from_tree.__kwdefaults__.items() if k != "return_type"}}))
'''


def spec(token: str, task_id: int = 1, task_type: TaskType = TaskType.CLIENT_APP) -> ExecutionSpec:
    return ExecutionSpec(task_type=task_type, runtime_api_address="127.0.0.1:1", token=token, insecure=True,
                         root_certificates_path=None, runtime_dependency_install=False, parent_pid=None,
                         suppress_output=False, task_id=task_id)


@pytest.fixture
def probe_executor(tmp_path, monkeypatch):
    (tmp_path / "probe_target.py").write_text(PROBE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    executor = WarmExecutor(preload=("numpy", "no_such_module_xyz"), target="probe_target:run")
    yield executor
    executor.close()


def wait_for(path, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return json.loads(path.read_text())
        time.sleep(0.05)
    pytest.fail(f"{path} never written")


def test_each_clientapp_task_is_a_fresh_child_of_the_zygote_without_bouquet(tmp_path, probe_executor):
    first, second = tmp_path / "a.json", tmp_path / "b.json"
    assert probe_executor.launch(spec(str(first), 1)) == LaunchResult.accepted()
    assert probe_executor.launch(spec(str(second), 2)) == LaunchResult.accepted()
    a, b = wait_for(first), wait_for(second)
    assert a["bouquet"] == [] and b["bouquet"] == []  # run_clientapp would load the FAB's bouquet
    assert a["numpy"]  # preloaded in the zygote, inherited by the fork
    assert a["ppid"] == b["ppid"] == probe_executor.zygote.pid and a["pid"] != b["pid"]
    assert a["stdin"] == b["stdin"] == "/dev/null"  # not the task pipe, which carries other tasks' tokens
    assert a["draw"] != b["draw"]  # each child reseeds numpy (a fork copies the zygote's state)
    # a message's objects not yet at the SuperNode: asked for again within 0.2 s, not after 1, 2, 4 ... s
    assert a["pull_defaults"]["initial_backoff"] == 0.05 and a["pull_defaults"]["backoff_cap"] == 0.2
    assert a["pull_defaults"]["max_tries_per_object"] == 25_000  # as long as Flower's 500 tries at 10 s
    assert a["task"] == ["certificates", "insecure", "parent_pid", "runtime_api_address", "runtime_dependency_install",
                         "token"]


def test_a_child_ends_as_an_interpreter_does_without_tearing_down_the_zygotes_heap(tmp_path, monkeypatch, capfd):
    (tmp_path / "probe_target.py").write_text(PROBE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    executor = WarmExecutor(preload=("numpy",), target="probe_target:run")  # started here: its output is captured
    token = tmp_path / "exit.json"
    try:
        executor.launch(spec(str(token)))
        report = wait_for(token)
        deadline = time.monotonic() + 30  # closed after the child's exit (a closed zygote stops its children)
        while not (tmp_path / "exit.json.atexit").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        executor.close()
    assert report["frozen"] > 1000  # the preloaded objects are frozen: no collection in the child walks them
    assert (tmp_path / "exit.json.thread").read_text() == "x"  # the non-daemon thread finished first
    assert (tmp_path / "exit.json.atexit").read_text() == "False"  # then the atexit handlers ran
    time.sleep(0.2)
    assert "unflushed line from the child" in capfd.readouterr().out  # and buffered output was flushed


def test_every_preloaded_library_imports_here():
    """A misspelt or missing name in PRELOAD would silently leave its cost in every task."""
    code = "import importlib, sys\nfor n in sys.argv[1:]: importlib.import_module(n)\nprint('bouquet' in sys.modules)"
    out = subprocess.run([sys.executable, "-P", "-c", code, *PRELOAD], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"  # none of them pulls in bouquet (the FAB's code must win)


def test_other_task_types_and_a_dead_zygote_launch_cold(tmp_path, probe_executor, monkeypatch):
    cold = []
    monkeypatch.setattr(SubprocessExecutor, "launch", lambda self, s: cold.append(s.task_id) or LaunchResult.accepted())
    probe_executor.launch(spec(str(tmp_path / "x"), 1, TaskType.SERVER_APP))
    assert cold == [1]
    probe_executor.zygote.kill()
    probe_executor.zygote.wait()
    probe_executor.launch(spec(str(tmp_path / "y"), 2))
    assert cold == [1, 2] and not (tmp_path / "y").exists()


def test_flowers_loop_still_builds_its_executor_where_we_replace_it():
    """main() swaps ``get_executor`` in Flower's SuperExec loop; flwr is pinned, and this fails if a
    new pin moves the hook."""
    loop = importlib.import_module("flwr.supercore.superexec.run_superexec")
    assert callable(loop.get_executor) and "get_executor" in loop.run_superexec.__code__.co_names


def test_a_zygote_that_does_not_answer_is_killed_and_the_task_launches_cold(tmp_path, monkeypatch):
    """No answer in time (here: a preload that hangs) must not leave the token with a zygote that
    could still run it later: it is killed, and this and every later task launch cold."""
    import bouquet.deploy.superexec as sx

    (tmp_path / "probe_target.py").write_text(PROBE)
    (tmp_path / "slow_import.py").write_text("import time\ntime.sleep(60)\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setattr(sx, "ACK_TIMEOUT_S", 1.0)
    cold = []
    monkeypatch.setattr(SubprocessExecutor, "launch", lambda self, s: cold.append(s.task_id) or LaunchResult.accepted())
    executor = WarmExecutor(preload=("slow_import",), target="probe_target:run")
    try:
        executor.launch(spec(str(tmp_path / "a"), 1))
        assert cold == [1] and executor.zygote.poll() is not None
        executor.launch(spec(str(tmp_path / "b"), 2))
        assert cold == [1, 2]
        time.sleep(0.5)
        assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # no token ran twice
    finally:
        executor.close()


def test_the_supernode_loop_waits_at_most_the_idle_poll(monkeypatch):
    """``bouquet.deploy.supernode`` swaps the ``time`` that flwr's SuperNode loop sleeps with:
    the hook must still exist in the pinned flwr, and every wait is capped, nothing else changed."""
    import importlib
    import time

    from bouquet.deploy import supernode

    loop = importlib.import_module(supernode.NODE_LOOP)
    assert loop.time is time and callable(loop.start_client_internal)  # what main() replaces
    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    clock = supernode.capped_clock(0.2)
    clock.sleep(3)
    clock.sleep(0.5)
    clock.sleep(0.05)
    assert slept == [0.2, 0.2, 0.05] and clock.monotonic is time.monotonic
    with pytest.raises(SystemExit, match="idle-poll"):
        supernode.main(["--idle-poll", "0", "--insecure"])


HANG = '''
import os, signal, threading
def run(**task):
    if task["token"].endswith("stubborn"):  # a task that does not stop when asked
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    open(task["token"] + ".pid", "w").write(str(os.getpid()))
    try:
        while True:  # as a ClientApp waiting to retry its SuperNode, which is gone (Flower: up to 20 s)
            threading.Event().wait(30)
    except KeyboardInterrupt:
        open(task["token"] + ".stopped", "w").write("SIGINT")
        raise
'''

# a SuperExec with one task running, which the test then kills without reaping it
SUPEREXEC = '''
import sys, time
from flwr.supercore.constant import TaskType
from flwr.supercore.superexec.executor import ExecutionSpec
from bouquet.deploy.superexec import WarmExecutor
executor = WarmExecutor(preload=(), target="hang_target:run", stop_grace=float(sys.argv[2]))
executor.launch(ExecutionSpec(task_type=TaskType.CLIENT_APP, runtime_api_address="127.0.0.1:1", token=sys.argv[1],
                              insecure=True, root_certificates_path=None, runtime_dependency_install=False,
                              parent_pid=None, suppress_output=False, task_id=1))
time.sleep(600)
'''


@pytest.mark.parametrize("task", ["polite", "stubborn"])
def test_no_child_outlives_a_killed_superexec_even_one_not_yet_reaped(tmp_path, monkeypatch, task):
    """A killed SuperExec that its parent has not reaped is a zombie, which Flower's pid watch takes
    for alive; the child must still stop: on SIGINT, or killed after the grace if it ignores it."""
    (tmp_path / "hang_target.py").write_text(HANG)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    token = tmp_path / task
    superexec = subprocess.Popen([sys.executable, "-c", SUPEREXEC, str(token), "1.0"], cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 120
        while not (pid_file := tmp_path / f"{task}.pid").exists() or not pid_file.read_text():
            assert superexec.poll() is None and time.monotonic() < deadline, "the task never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        time.sleep(0.5)
        assert _alive(child)  # the task runs as long as its SuperExec does
        os.kill(superexec.pid, signal.SIGKILL)  # and it is not reaped: a zombie until the end of this test
        deadline = time.monotonic() + 20
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child)
        os.kill(superexec.pid, 0)  # the SuperExec still "exists" (a zombie): Flower's watch would wait on
        assert (tmp_path / f"{task}.stopped").exists() == (task == "polite")  # asked first, as Flower asks
    finally:
        superexec.kill()
        superexec.wait()


def test_a_dead_zygote_leaves_running_tasks_alone_and_a_closed_executor_stops_them(tmp_path, monkeypatch):
    """The zygote may die (OOM, or killed for not answering) while its SuperExec lives on: its tasks
    run to their end. Closing the executor (the SuperExec stopping) stops them, on SIGINT."""
    (tmp_path / "hang_target.py").write_text(HANG)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    executor = WarmExecutor(preload=(), target="hang_target:run", stop_grace=5.0)
    token = tmp_path / "polite"
    try:
        assert executor.launch(spec(str(token))) == LaunchResult.accepted()
        deadline = time.monotonic() + 60
        while not (pid_file := tmp_path / "polite.pid").exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        executor.zygote.kill()
        executor.zygote.wait()
        time.sleep(1.0)
        assert _alive(child)
    finally:
        executor.close()
    deadline = time.monotonic() + 4  # before the grace: it stopped when asked
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child) and (tmp_path / "polite.stopped").exists()
