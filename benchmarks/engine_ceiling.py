"""How fast ONNX Runtime's own kernels can decode a graph model on this host, at 1 and 2 threads.

For a saved model run as one ONNX graph (default: ``genai:weights=gguf`` applied to the default model),
``unbottle.profiling.graph_ceiling`` times one batch-1 decode step of the whole graph against its
weight-reading nodes alone (the real initializers in a graph of their own), in alternating rounds.
The weights-only time is the most this engine can give per token here whatever the graph around the
kernels does; beside it: the bandwidth it implies, against the host's measured read bandwidth (cache
or DRAM, whichever the weights meet), and the goals of issue 14 restated as tokens/s.

Usage: python benchmarks/engine_ceiling.py [--model DIR] [--threads 1,2] [--context 96]
Writes benchmarks/results/engine_ceiling.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from engines import roofline_bandwidth  # this folder's engines.py: the same roofline bandwidth

from unbottle.core.env import manifest
from unbottle.models import load
from unbottle.passes import apply_, parse_pass
from unbottle.profiling.graph_ceiling import measure_ceiling
from unbottle.profiling.peaks import measure_bandwidths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="a saved graph model (default: the gguf candidate)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--context", type=int, default=96)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "engine_ceiling.json"))
    args = parser.parse_args()
    if args.model:
        model = load(args.model).model
    else:
        model = apply_(load("smollm2-135m"), [parse_pass("genai:weights=gguf")])[0].model
    doc = {"model": args.model or "smollm2-135m + genai:weights=gguf", "results": {}}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        bandwidth = measure_bandwidths()
        got = measure_ceiling(model, args.context, threads)
        which, peak = roofline_bandwidth(bandwidth, got["weight_bytes"])
        row = {**got, "bandwidth": bandwidth, "bandwidth_used": which, "fraction": got["weights_gbps"] / peak}
        doc["results"][str(threads)] = row
        print(
            f"{threads} thread(s): whole step {1e3 * got['step_s']:.2f} ms "
            f"({1 / got['step_s']:.1f} tok/s); weight kernels alone {1e3 * got['weights_s']:.2f} ms "
            f"({got['tokens_per_s_ceiling']:.1f} tok/s at most), {got['weights_gbps']:.1f} GB/s of "
            f"{got['weight_bytes'] / 2**20:.1f} MiB = {100 * row['fraction']:.0f}% of the measured {which} "
            f"bandwidth ({peak:.1f} GB/s); the graph around them adds "
            f"{1e3 * (got['step_s'] - got['weights_s']):.2f} ms"
        )
    doc["manifest"] = manifest()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".tmp").write_text(json.dumps(doc, indent=1, default=str))
    out.with_suffix(".tmp").replace(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
