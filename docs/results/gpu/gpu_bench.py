"""The bench's plain-loop bound (bouquet.simulations.bench.bound) on the GPU and on the CPU, same
seeds: FedAvg, MNIST, 100 clients, 5 rounds. Flower's rows need Ray, which cannot travel here."""
import json
import os

import numpy as np

from bouquet import device
from bouquet.simulations.bench import bound


if __name__ == "__main__":
    base = {"method": "fedavg", "dataset": "mnist", "partitioner": "iid", "seed": 0, "num-server-rounds": 5,
            "fraction-evaluate": 0.0}
    out, arrays = {}, {}
    for choice, workers in (("cpu", 2), ("auto", 2), ("auto", 1)):
        os.environ["BOUQUET_DEVICE"] = choice
        device.device.cache_clear()
        r = bound(base, 100, workers)
        name = f"{'gpu' if choice == 'auto' else 'cpu'}-{workers}workers"
        arrays[name] = r["arrays"]
        out[name] = {k: r[k] for k in ("startup_s", "round_s", "total_s", "final_global_test")}
        out[name]["device"] = str(device.device())
        print(name, json.dumps(out[name]), flush=True)
    ref = arrays["cpu-2workers"]
    for name, a in arrays.items():
        out[name]["max_abs_dw_vs_cpu2"] = max(float(np.max(np.abs(np.asarray(a[k], np.float64) - np.asarray(ref[k], np.float64))))
                                              for k in ref)
    json.dump(out, open(os.path.join(os.environ.get("OUT", "."), "gpu_bench.json"), "w"), indent=1)
    print(json.dumps({k: (round(v["total_s"], 1), v["max_abs_dw_vs_cpu2"]) for k, v in out.items()}))
