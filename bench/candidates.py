#!/usr/bin/env python3
"""Several builds of mk-binary-cache (and optionally `nix copy`) back to back on the same closures.

For comparing candidates of one setting, e.g. xz block sizes: build one binary per candidate, then

    bench/candidates.py --closures bigfile,mixed --only xz \
        4MiB=/tmp/mkbc-4 24MiB=/tmp/mkbc-24 [--peers nix-copy-parallel]

Each (closure, compression) runs every candidate, then each peer, one after the other, so that they
see about the same load; "other CPU" says how much else ran on the machine meanwhile. With
`--repeat N` that round runs N times, and each row is a run of median wall time, with the lowest and
highest (for the small paths, whose times swing with the file system's state). Outputs of closures
of over 1,000 paths are kept until the end, as in bench.py (see bench.keep_output). Prints a
Markdown table and writes it, with the JSON, to bench/results/candidates.{md,json}.
Uses bench/run's settings (NIX_CONF_DIR etc.) when called through `bench/run --candidates`; called
directly, set NIX_CONF_DIR=scripts/nix NIX_USER_CONF_FILES= yourself.
"""

import argparse
import json
import os
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
import fixtures  # noqa: E402

MiB = bench.MiB


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("candidates", nargs="+", help="LABEL=BINARY")
    ap.add_argument("--closures", default="bigfile", help="mixed,bigfile,small (see bench.py)")
    ap.add_argument("--only", default="xz", help="compressions")
    ap.add_argument("--peers", default="", help="nix-copy,nix-copy-parallel (run after the candidates)")
    ap.add_argument("--build-to", action="store_true",
                    help="also run each candidate as `build --to` (label 'LABEL --to'), after its builder run")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=1, help="rounds of every candidate and peer")
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/var/tmp/mk-binary-cache-bench"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "candidates"))
    args = ap.parse_args()
    mode = "quick" if args.quick else "full"
    cands = [c.split("=", 1) for c in args.candidates]
    peers = [p for p in args.peers.split(",") if p]
    run_dir = os.path.join(args.work, f"run-{os.getpid()}")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    rows = []
    for name in args.closures.split(","):
        root = bench.build_fixture(name, args.work, mode)
        ci = fixtures.closure_info(root)
        bench.log(f"closure {name}: {len(ci)} paths, {sum(e['narSize'] for e in ci) / MiB:.1f} MiB NAR")
        bench.warm_up(ci)
        for comp in args.only.split(","):
            tries = {}
            modes = [("", "ours")] + ([(" --to", "ours-to")] if args.build_to else [])
            runs = [(lbl + tag, method, b) for lbl, b in cands for tag, method in modes]
            runs += [(p, p, None) for p in peers]
            for rep, (label, method, binary) in [(rep, r) for rep in range(args.repeat) for r in runs]:
                out = os.path.join(run_dir, f"out-{name}-{comp}-{label}-{rep}")
                # No waiting for an idle machine: candidates are compared with each other, in turn.
                r = bench.run_method(name, method, comp, root, ci, out, run_dir, binary,
                                     gate=lambda: (0.0, None), tag=f"{name} {comp} {label}")
                r["candidate"] = label
                tries.setdefault(label, []).append(r)
            rows.extend(bench.median_run(t) for t in tries.values())
    shutil.rmtree(run_dir, ignore_errors=True)
    lines = ["| closure | compression | candidate | wall s | CPU s | peak RSS MiB | output MiB | other CPU s | check |",
             "|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        out = f"{r['out_bytes'] / MiB:.1f}" if r["out_bytes"] is not None else "-"
        walls = r["walls"]
        spread = f" ({min(walls):.2f}–{max(walls):.2f} of {len(walls)})" if len(walls) > 1 else ""
        lines.append(f"| {r['closure']} | {r['compression']} | {r['candidate']} | {r['wall']:.2f}{spread} | {r['cpu']:.2f} | "
                     f"{r['rss_mib']:.0f} | {out} | {r['other_cpu']:.1f} | {'OK' if not r['problems'] else 'FAIL'} |")
    bench.write_table(args.out, lines)
    with open(args.out + ".json", "w") as f:
        json.dump(rows, f, indent=1)
    return 1 if any(r["problems"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
