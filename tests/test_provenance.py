"""Which code computed a run (``bouquet.provenance``): a checkout's commit and whether the app's
files differ from it; nothing claimed for a folder that is not that checkout."""

from __future__ import annotations

import subprocess

from bouquet import provenance


def _git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


def _checkout(tmp_path):
    repo = tmp_path / "repo"
    (repo / "bouquet").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (repo / "bouquet" / "a.py").write_text("A = 1\n")
    (repo / "notes.md").write_text("not the app\n")
    _git(repo.parent, "init", "-q", str(repo))
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    return repo


def test_a_checkouts_commit_and_whether_the_app_differs_from_it(tmp_path):
    repo = _checkout(tmp_path)
    head = _git(repo, "rev-parse", "HEAD")
    assert provenance.of_checkout(repo) == {"commit": head, "dirty": False}
    (repo / "notes.md").write_text("edited, outside the app\n")
    (repo / "scratch.py").write_text("untracked, outside the app\n")
    assert provenance.of_checkout(repo) == {"commit": head, "dirty": False}
    (repo / "bouquet" / "new.py").write_text("untracked, but staged with the package\n")
    assert provenance.of_checkout(repo) == {"commit": head, "dirty": True}
    (repo / "bouquet" / "new.py").unlink()
    (repo / "bouquet" / "a.py").write_text("A = 2\n")  # the code that runs differs from the commit
    assert provenance.of_checkout(repo) == {"commit": head, "dirty": True}


def test_another_repository_in_the_environment_is_not_asked(tmp_path, monkeypatch):
    repo = _checkout(tmp_path)
    other = _checkout(tmp_path / "elsewhere")
    (other / "bouquet" / "a.py").write_text("A = 3\n")
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    monkeypatch.delenv("GIT_INDEX_FILE", raising=False)
    code = provenance.of_checkout(repo)
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_WORK_TREE")
    assert code == {"commit": _git(repo, "rev-parse", "HEAD"), "dirty": False}


def test_a_folder_that_is_not_the_checkout_is_unknown(tmp_path):
    repo = _checkout(tmp_path)
    (tmp_path / "plain").mkdir()
    assert provenance.of_checkout(tmp_path / "plain") == {"commit": "unknown"}
    assert provenance.of_checkout(repo / "bouquet") == {"commit": "unknown"}  # inside it, not it


def test_a_stamped_copy_says_its_checkouts_commit(tmp_path):
    repo = _checkout(tmp_path)
    copy = tmp_path / "staged" / "bouquet"
    copy.mkdir(parents=True)
    provenance.stamp(copy, repo)
    assert provenance.read_stamp(copy / provenance.FILE) == {"commit": _git(repo, "rev-parse", "HEAD"), "dirty": False}
    namespace = {}  # and it is valid Python, should anything import every module of the package
    exec((copy / provenance.FILE).read_text(), namespace)  # noqa: S102 (our own literal)
    assert namespace["CODE"]["dirty"] is False
