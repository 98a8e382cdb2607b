"""The CLI's checks before anything starts: each bad input is one error naming its key, file or resource."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bouquet import cli
from bouquet.preflight import PreflightError, check_data, check_federation, check_run, parse_overrides, usable_cpus

DIGITS = {"method": "fedavg", "dataset": "digits", "partitioner": "iid"}


def test_overrides_use_flowers_parser_quotes_spaces_and_apostrophes():
    got = parse_overrides(["method='fedprox' output-dir='/a b/c' num-server-rounds=5",
                           "data-dir=\"/it's/here\" fraction-train=0.5"])
    assert got == {"method": "fedprox", "output-dir": "/a b/c", "num-server-rounds": 5,
                   "data-dir": "/it's/here", "fraction-train": 0.5}
    assert parse_overrides(["seed=1", "seed=2"]) == {"seed": 2}  # a later --run-config wins


def test_overrides_from_a_toml_file(tmp_path: Path):
    path = tmp_path / "cell.toml"
    path.write_text('method = "fedkper"\nnum-server-rounds = 3\n')
    assert parse_overrides([str(path)]) == {"method": "fedkper", "num-server-rounds": 3}
    with pytest.raises(PreflightError, match="missing.toml: no such file"):
        parse_overrides([str(tmp_path / "missing.toml")])


@pytest.mark.parametrize(("text", "message"), [
    ("seed=1 method='fedavg' seed=2", "key 'seed' is given twice"),
    ("method=fedprox", "cannot parse --run-config"),  # an unquoted string
    ("fedprox", "expected key=value pairs"),
])
def test_bad_override_syntax_is_named(text: str, message: str):
    with pytest.raises(PreflightError, match=message):
        parse_overrides([text])


@pytest.mark.parametrize(("overrides", "message"), [
    ({"methd": "fedavg"}, r"unknown run-config key 'methd' \(did you mean 'method'\?\)"),
    ({"num-server-rounds": 2.5}, "num-server-rounds=2.5 must be of type int"),
    ({"method": "fedsgd"}, "method='fedsgd' is not valid; choose one of: fedavg"),
    ({**DIGITS, "partitioner": "louvain"}, "louvain"),
    ({**DIGITS, "resume-from": "/nowhere"}, "resume-from='/nowhere': no checkpoint/round.json"),
])
def test_bad_config_is_refused_before_anything_starts(overrides, message):
    with pytest.raises(PreflightError, match=message):
        check_run(overrides, num_supernodes=3)


def test_missing_and_corrupt_data_name_the_folder_and_file(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("BOUQUET_DOWNLOAD", "0")
    with pytest.raises(PreflightError, match=rf"missing data folder {tmp_path}/cora .*ind.cora.x.*BOUQUET_DATA"):
        check_data("cora", str(tmp_path))
    shared = Path(check_data("mnist"))  # the real data passes
    shutil.copytree(shared / "mnist", tmp_path / "mnist")
    target = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    target.write_bytes(target.read_bytes()[:-1])
    with pytest.raises(PreflightError, match=r"corrupt data file .*t10k-labels-idx1-ubyte.gz: expected sha256"):
        check_data("mnist", str(tmp_path))
    with pytest.raises(PreflightError, match="missing data"):
        check_run({"dataset": "cora", "data-dir": str(tmp_path / "empty")}, num_supernodes=3)


def test_federation_must_fit_the_machine():
    check_federation(3, 1, 0.0)  # the README's settings
    for bad, message in [((0, 1, 0.0), "--num-supernodes"), ((3, 0, 0.0), "--cpus-per-client"),
                         ((3, usable_cpus() + 1, 0.0), "--cpus-per-client"), ((3, 1.5, 0.0), "--cpus-per-client"),
                         ((3, 1, -1.0), "--gpus-per-client")]:
        with pytest.raises(PreflightError, match=message):
            check_federation(*bad)


def test_gpu_share_without_a_gpu_is_refused():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(PreflightError, match="no CUDA GPU"):
        check_federation(3, 1, 0.5)


def test_output_dir_that_cannot_be_created(tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(PreflightError, match="output-dir .* cannot be created"):
        check_run({**DIGITS, "output-dir": str(tmp_path / "file" / "out")}, num_supernodes=3)


def test_cli_run_refuses_bad_input_with_one_line_and_starts_nothing(monkeypatch, capsys, tmp_path):
    from bouquet.simulations import launch as launch_mod

    monkeypatch.setattr(launch_mod, "SuperLink", lambda *a, **k: pytest.fail("a SuperLink was started"))
    assert cli.main(["run", "--run-config", "methd='fedavg'"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bouquet run: error: unknown run-config key 'methd'")
    assert cli.main(["run", "--cpus-per-client", "1", "--run-config", "num-server-rounds=0"]) == 2
    assert "num-server-rounds=0 is out of range" in capsys.readouterr().err
    out = tmp_path / "out dir's"  # a space and an apostrophe survive Flower's parser
    assert cli.main(["run", "--check", "--run-config", f"method='fedavg' dataset='digits' partitioner='iid' "
                     f"output-dir=\"{out}\""]) == 0
    assert f"results under {out}" in capsys.readouterr().out and out.is_dir()


def test_cli_lists_choices_and_version(capsys):
    from bouquet.registry import METHODS

    assert cli.main(["list", "methods"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in METHODS)
    assert cli.main(["list", "keys"]) == 0
    keys = capsys.readouterr().out
    assert "num-server-rounds" in keys
    rule = next(line for line in keys.splitlines() if "graph-missing-rule" in line)
    assert "one of: random, not-largest" in rule  # the same tuple the config validates against
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0 and "flwr 1.41.0" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    assert "--clients" in capsys.readouterr().out


def test_usable_cpus_honours_a_cgroup_cpu_quota(tmp_path):
    """A container's --cpus (cgroup v2 cpu.max "quota period") caps the cores counted, as Ray
    counts them; no file or "max" leaves the CPU affinity."""
    import os

    from bouquet.preflight import usable_cpus

    affinity = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    assert usable_cpus(cpu_max) == affinity  # no file
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == affinity
    cpu_max.write_text("50000 100000\n")  # half a core: still one slot
    assert usable_cpus(cpu_max) == 1
    cpu_max.write_text(f"{(affinity + 3) * 100000} 100000\n")  # a quota above the affinity
    assert usable_cpus(cpu_max) == affinity
    cpu_max.write_text("garbage\n")
    assert usable_cpus(cpu_max) == affinity
