"""Identification search at gallery scale: matrix product vs FAISS, latency per probe and memory.

    python bench/gallery_scale.py                         # 1k, 100k, 1M templates of 512-d
    python bench/gallery_scale.py --sizes 1000 10000 --dim 128

Templates are random unit vectors, one person each; every probe is an enrolled template plus
noise (cosine about 0.7 to it), so the right answer is known. Each measurement runs in a fresh
subprocess, so its memory is its own: "index MB" is the growth of the process's resident memory
while building the search index from the templates (the templates themselves are counted
before), "peak MB" the process's peak. Latency is per single-probe call of
``meer.gallery._Index.search`` (top 5 people, score = max over a person's templates), the path
``meer serve`` takes; "ivf" is an approximate FAISS IVF index shown for comparison (not used by
meer), with its top-1 recall against the exact answer.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

METHODS = ("matmul", "faiss", "ivf")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(method: str, size: int, dim: int, probes: int) -> dict:
    import numpy as np

    from meer.gallery import _Index

    rng = np.random.default_rng(0)
    vectors = np.empty((size, dim), np.float32)
    for start in range(0, size, 100_000):  # in blocks: no float64 copy of the whole gallery
        block = rng.standard_normal((min(100_000, size - start), dim), dtype=np.float32)
        vectors[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    names = [f"p{i:07d}" for i in range(size)]
    truth = rng.integers(0, size, probes)
    noise = rng.standard_normal((probes, dim), dtype=np.float32)
    queries = vectors[truth] + noise / np.linalg.norm(noise, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    before = rss_mb()
    start = time.perf_counter()
    if method == "ivf":
        import faiss

        lists = max(1, int(4 * size**0.5))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors[rng.choice(size, min(size, 50 * lists), replace=False)])
        index.add(vectors)
        index.nprobe = 16

        def search(query):
            return [names[int(index.search(query[None], 5)[1][0][0])]]
    else:
        gallery = _Index(names, vectors, method)

        def search(query):
            return [m.name for m in gallery.search(query[None], 5)[0]]
    build_s = time.perf_counter() - start
    index_mb = rss_mb() - before
    search(queries[0])  # warm-up
    latencies, hits = [], 0
    for query, true in zip(queries, truth):
        start = time.perf_counter()
        found = search(query)
        latencies.append(time.perf_counter() - start)
        hits += found[0] == names[true]
    latencies_ms = np.array(latencies) * 1000
    return {
        "method": method, "size": size, "dim": dim, "build_s": build_s,
        "p50_ms": float(np.percentile(latencies_ms, 50)), "p99_ms": float(np.percentile(latencies_ms, 99)),
        "top1": hits / len(truth), "templates_mb": size * dim * 4 / 2**20, "index_mb": index_mb,
        "peak_mb": peak_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--probes", type=int, default=100)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one measurement, print JSON
    args = parser.parse_args()
    if args.one:
        method, size = args.one.split(":")
        print(json.dumps(measure(method, int(size), args.dim, args.probes)))
        return
    print("| templates | search | build s | p50 ms/probe | p99 ms/probe | top-1 | templates MB | index MB | peak RSS MB |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in args.sizes:
        for method in args.methods:
            command = [sys.executable, __file__, "--one", f"{method}:{size}", "--dim", str(args.dim),
                       "--probes", str(args.probes)]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode != 0:
                print(f"| {size:,} | {method} | failed: {out.stderr.strip().splitlines()[-1]} |", flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            label = {"matmul": "matrix product", "faiss": "FAISS flat (exact)", "ivf": "FAISS IVF (approx.)"}[method]
            print(f"| {size:,} | {label} | {r['build_s']:.2f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                  f"{r['top1']:.2f} | {r['templates_mb']:.0f} | {r['index_mb']:.0f} | {r['peak_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
