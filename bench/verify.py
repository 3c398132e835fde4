#!/usr/bin/env python3
"""How fast `verify` checks one large zstd NAR on one core and on several.

The NAR is real binaries: COPIES copies of the largest shared library under /usr/lib (six of
a ~105 MiB libLLVM make a ~630 MiB NAR, about 3.5:1 with zstd), one store path added with
`nix-store --add` and kept under WORK/roots. Each binary writes its own zstd cache of it with
`build --to`, and then each binary's `verify -j1` and `verify -jN` time both caches, in turn,
ROUNDS times; the table gives the median wall time of each. A file of zeros would be no test:
its hash, not its decoding, would dominate.

    bench/verify.py new=target/.../mk-binary-cache [old=/work/main/.../mk-binary-cache]

Called directly, set NIX_CONF_DIR=scripts/nix NIX_USER_CONF_FILES= yourself (bench/run does).
Prints a Markdown table and writes it to bench/results/verify.md.
"""

import argparse
import glob
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bench  # noqa: E402
import fixtures  # noqa: E402

MiB = bench.MiB


def largest_library():
    """The largest shared library in /usr/lib and its arch directories (not deeper: that can be slow)."""
    libs = [p for p in glob.glob("/usr/lib/*.so*") + glob.glob("/usr/lib/*/*.so*")
            if os.path.isfile(p) and not os.path.islink(p)]
    return max(libs, key=os.path.getsize)


def store_path(work, library, copies):
    """A store path holding `copies` copies of `library`, made once and kept."""
    name = f"verify-{copies}x-{os.path.basename(library)}"
    root = os.path.join(work, "roots", name)
    if os.path.exists(root):
        return os.path.realpath(root)
    staging = os.path.join(work, name)
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    for i in range(copies):
        shutil.copyfile(library, os.path.join(staging, f"{i}-{os.path.basename(library)}"))
    out = subprocess.run(["nix-store", "--add", staging], check=True, stdout=subprocess.PIPE,
                         text=True).stdout.strip()
    shutil.rmtree(staging)
    fixtures.add_gc_root(work, name, out)
    return out


def nar_size_in(cache):
    """The NarSize of the one narinfo in `cache`."""
    [name] = [n for n in os.listdir(cache) if n.endswith(".narinfo")]
    with open(os.path.join(cache, name)) as f:
        return next(int(line.split()[1]) for line in f if line.startswith("NarSize:"))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("binaries", nargs="+", help="LABEL=BINARY; each writes a cache and verifies every cache")
    ap.add_argument("--library", help="the file to copy (default: the largest shared library under /usr/lib)")
    ap.add_argument("--copies", type=int, default=6)
    ap.add_argument("--jobs", default=f"1,{os.cpu_count()}", help="verify -j values")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/var/tmp/mk-binary-cache-bench"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "verify"))
    args = ap.parse_args()
    binaries = [b.split("=", 1) for b in args.binaries]
    jobs = [int(j) for j in args.jobs.split(",")]
    library = args.library or largest_library()
    path = store_path(args.work, library, args.copies)
    bench.log(f"{args.copies} copies of {library}: {path}")
    run_dir = os.path.join(args.work, f"verify-{os.getpid()}")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)
    caches = {}
    for label, binary in binaries:
        cache = os.path.join(run_dir, f"cache-{label}")
        subprocess.run([binary, "build", "--quiet", "--to", cache, path], check=True)
        caches[label] = cache
    nar_size = nar_size_in(next(iter(caches.values())))
    walls = {}
    for rnd in range(args.rounds):
        for label, binary in binaries:
            for cache_label, cache in caches.items():
                for j in jobs:
                    r = bench.timed([binary, "verify", "-j", str(j), cache], None,
                                    os.path.join(run_dir, "rss"))
                    if r["rc"] != 0:
                        sys.exit(f"verify failed: {r['log']}")
                    walls.setdefault((label, cache_label, j), []).append(r)
                    bench.log(f"round {rnd + 1}: {label} verify -j{j} of {cache_label}'s cache: "
                              f"{r['wall']:.2f} s, cpu {r['cpu']:.2f} s, rss {r['rss_mib']:.0f} MiB, "
                              f"other cpu {r['other_cpu']:.1f} s")
    shutil.rmtree(run_dir, ignore_errors=True)
    lines = [f"NAR: {args.copies} × {os.path.basename(library)}, {nar_size / MiB:.0f} MiB; "
             f"median of {args.rounds} rounds; load average before: {os.getloadavg()[0]:.1f}", "",
             "| verify by | cache written by | -j | wall s | CPU s | peak RSS MiB | vs -j1 | other CPU s |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (label, cache_label, j), runs in walls.items():
        mid = sorted(runs, key=lambda r: r["wall"])[len(runs) // 2]
        one = statistics.median(r["wall"] for r in walls[(label, cache_label, jobs[0])])
        lines.append(f"| {label} | {cache_label} | {j} | {mid['wall']:.2f} | {mid['cpu']:.2f} | "
                     f"{mid['rss_mib']:.0f} | {one / mid['wall']:.2f}× | {mid['other_cpu']:.1f} |")
    bench.write_table(args.out, lines)


if __name__ == "__main__":
    main()
