"""Which code computed a run: the git commit of the Bouquet checkout it came from, and whether
files of the app (the package, ``pyproject.toml``) differed from that commit.

Why: ``bouquet reproduce`` keeps finished runs, and a table can hold runs made weeks apart; a
change to a method's code does not show in its run config. Every ``summary.json`` therefore says
``code``. A simulation runs a staged copy of the package (``launch.stage_app``), which is not a
git checkout: staging writes ``_code_version.py`` into the copy (``pyproject.toml``'s ``fab-include``
ships only the package's ``.py`` files; it holds a literal, read with ``ast.literal_eval``), which is
what a run reads then.
Elsewhere (an in-process run, a FAB built from a checkout's copy) the package's own checkout is
asked, and a package outside any checkout says ``unknown``."""

from __future__ import annotations

import ast
import functools
import os
import subprocess
from pathlib import Path
from typing import Any

FILE = "_code_version.py"  # written into a staged copy of the package
APP_PATHS = ("bouquet", "pyproject.toml")


def of_checkout(repo: Path) -> dict[str, Any]:
    """{"commit": sha, "dirty": bool} of the checkout at ``repo``, or {"commit": "unknown"}."""
    # another repository named by the environment is not this one; never take the index lock
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}

    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", "-C", str(repo), *args], capture_output=True,
                              text=True, check=True, timeout=10, env=env).stdout.strip()
    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != Path(repo).resolve():
            return {"commit": "unknown"}  # a copy inside some other checkout is not that checkout's code
        commit = git("rev-parse", "HEAD")
        # staging copies untracked files of the package too: they count
        dirty = bool(git("status", "--porcelain", "--untracked-files=all", "--", *APP_PATHS))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown"}
    return {"commit": commit, "dirty": dirty}


def stamp(package_copy: Path, repo: Path) -> None:
    """Record ``repo``'s version in a copy of its package (see the module docstring)."""
    (Path(package_copy) / FILE).write_text(f"CODE = {of_checkout(repo)!r}\n")


def read_stamp(path: Path) -> dict[str, Any]:
    """The version a stamped copy's ``FILE`` holds (a literal, never executed)."""
    return ast.literal_eval(Path(path).read_text().partition("=")[2].strip())


@functools.cache
def current() -> dict[str, Any]:
    """The version of the code this process runs (cached: it does not change under a run)."""
    package = Path(__file__).resolve().parent
    try:
        return read_stamp(package / FILE)
    except (OSError, ValueError, SyntaxError):
        pass
    repo = package.parent
    if not (repo / "pyproject.toml").is_file():
        return {"commit": "unknown"}
    return of_checkout(repo)
