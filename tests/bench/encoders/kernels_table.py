#!/usr/bin/env python3
"""Turns encoders_bench JSON output into the markdown tables of docs/BENCHMARKS.md "Kernels".

  build-enc/tests/bench/encoders/encoders_bench --benchmark_min_time=0.2 \
      --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
      --benchmark_format=json --benchmark_out=/tmp/enc_bench.json
  python3 tests/bench/encoders/kernels_table.py /tmp/enc_bench.json
"""
import json
import sys


def main(path):
    data = json.load(open(path))
    rows = {}
    for b in data["benchmarks"]:
        if b.get("run_type") == "aggregate" and b.get("aggregate_name") != "median":
            continue
        name = b.get("run_name", b["name"]).replace("_median", "")
        parts = name.split("/")
        op, pset = parts[0], parts[1]
        variant = "/".join(parts[2:])
        rows.setdefault(pset, []).append((op, variant, b))
    ctx = data.get("context", {})
    print(f"Host: {ctx.get('num_cpus')} x {ctx.get('mhz_per_cpu')} MHz, "
          f"caches {', '.join(str(c['size'] // 1024) + ' KiB L' + str(c['level']) for c in ctx.get('caches', []))}; "
          f"{ctx.get('date', '')}\n")
    # × memcpy against the memcpy benchmark of the same set in the same run (median), which is
    # steadier than the single in-process x_memcpy counter.
    memcpy = {}
    for pset, items in rows.items():
        for op, variant, b in items:
            if op == "memcpy":
                memcpy[pset] = b.get("bytes_per_second", 0)
    for pset in sorted(rows, key=lambda s: ["random", "text", "sparse", "structured", "zero", "guest"].index(s.split("+")[0])):
        print(f"### {pset}\n")
        print("| operation | variant | GB/s | × memcpy | ratio |")
        print("|---|---|---:|---:|---:|")
        for op, variant, b in rows[pset]:
            gbs = b.get("bytes_per_second", 0) / 1e9
            ref = memcpy.get(pset.split("+")[0])
            xm = b.get("bytes_per_second", 0) / ref if ref else b.get("x_memcpy", 0)
            ratio = b.get("ratio")
            r = f"{ratio:.2f}" if ratio is not None else ""
            print(f"| {op} | {variant} | {gbs:.2f} | {xm:.2f} | {r} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
