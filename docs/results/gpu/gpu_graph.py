"""fedlog / fedpub on Cora: CPU once, GPU twice; is the CPU-GPU gap GPU nondeterminism?"""
import csv, json, os, sys, tempfile
from pathlib import Path
import torch
from bouquet import device as dev
from tests.inprocess import run_in_process
from tests.test_multiplex import _GRAPH, _SETTINGS

def metrics(d):
    with (d / "metrics.csv").open() as f:
        return {(r["round"], r["partition_id"], r["metric"]): float(r["value"]) for r in csv.DictReader(f)}

def gap(a, b):
    keys = [k for k in a if 0 <= a[k] <= 1 and 0 <= b.get(k, -1) <= 1]
    return max((abs(a[k] - b[k]), k) for k in keys)

out = {}
for method in ("fedlog", "fedpub"):
    cfg = {"method": method, "num-server-rounds": 2, "seed": 3, **_GRAPH, **_SETTINGS[method]}
    runs = {}
    for name, choice in (("cpu", "cpu"), ("gpu1", "auto"), ("gpu2", "auto")):
        os.environ[dev.ENV] = choice; dev.device.cache_clear()
        runs[name] = metrics(run_in_process(Path(tempfile.mkdtemp()), 4, **cfg)[0])
    out[method] = {"cpu_vs_gpu1": gap(runs["cpu"], runs["gpu1"]), "gpu1_vs_gpu2": gap(runs["gpu1"], runs["gpu2"]),
                   "cpu_global_new_client": [v for k, v in runs["cpu"].items() if k[2] == "global_model@new_client"],
                   "gpu_global_new_client": [v for k, v in runs["gpu1"].items() if k[2] == "global_model@new_client"]}
    print(method, json.dumps(out[method]), flush=True)
json.dump(out, open(os.path.join(os.environ.get("OUT", "."), "gpu_graph.json"), "w"), indent=1)
