#!/usr/bin/env python3
"""mk-binary-cache benchmark driver. Use bench/run (it installs tools and builds the binary)."""

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import stat
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import fixtures  # noqa: E402
import limit  # noqa: E402
import report  # noqa: E402

CORES = 2
COMPRESSIONS = ["none", "zstd", "xz"]
EXT = {"zstd": ".zst", "xz": ".xz", "none": ""}
ALL_METHODS = ["ours", "nix-copy", "nix-copy-parallel", "nixpkgs"]
MiB = 1 << 20


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_busy():
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return total - idle, total


def timed(cmd, env, rss_file, cwd=None):
    """Run cmd; return wall, CPU (user+sys of the process tree), peak RSS, other CPU."""
    # GNU time reports the peak RSS: a child forked from this Python process would inherit
    # Python's high-water mark in ru_maxrss, a child of the small `time` process does not.
    hz = os.sysconf("SC_CLK_TCK")
    b0, _ = cpu_busy()
    t0 = time.perf_counter()
    p = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd, env=env, cwd=cwd,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    b1, _ = cpu_busy()
    rc = os.waitstatus_to_exitcode(status)
    cpu = ru.ru_utime + ru.ru_stime
    machine_cpu = (b1 - b0) / hz
    try:
        rss_kib = int(open(rss_file).read().split()[-1])
    except (OSError, ValueError, IndexError):
        rss_kib = ru.ru_maxrss
    return {"rc": rc, "wall": wall, "cpu": cpu, "rss_mib": rss_kib / 1024,
            "other_cpu": max(0.0, machine_cpu - cpu), "log": out.decode(errors="replace")[-3000:]}


def wait_quiet(max_wait, threshold=0.15):
    """Wait (up to max_wait s) until the machine is idle: busy < threshold over a 2 s window.
    Other engineers share this machine; returns (seconds waited, busy fraction seen last)."""
    t0 = time.time()
    busy = 0.0
    while True:
        b0, t0j = cpu_busy()
        time.sleep(2)
        b1, t1j = cpu_busy()
        busy = (b1 - b0) / max(1, t1j - t0j)
        if busy < threshold or time.time() - t0 >= max_wait:
            return time.time() - t0, busy


def dir_bytes(d):
    total = 0
    for root, dirs, files in os.walk(d):
        for f in files:
            total += os.lstat(os.path.join(root, f)).st_size
    return total


def check_cache(out, closure, comp, verify_file_hash):
    """Check a cache: one narinfo per path, fields match the closure, NAR files exist with FileSize.
    Returns a list of problems (empty = OK)."""
    problems = []
    by_hash = {os.path.basename(e["path"]).split("-", 1)[0]: e for e in closure}
    try:
        infos = [f for f in os.listdir(out) if f.endswith(".narinfo")]
    except OSError as e:
        return [f"no output: {e}"]
    if len(infos) != len(closure):
        problems.append(f"{len(infos)} narinfos for {len(closure)} paths")
    if not os.path.exists(os.path.join(out, "nix-cache-info")):
        problems.append("no nix-cache-info")
    for f in sorted(infos):
        e = by_hash.get(f[:-len(".narinfo")])
        text = open(os.path.join(out, f)).read()
        if not text.endswith("\n"):
            problems.append(f"{f}: no final newline")
        kv = dict(line.split(": ", 1) if ": " in line else (line.rstrip(":"), "")
                  for line in text.splitlines())
        if e is None:
            problems.append(f"{f}: not in closure")
            continue
        want_refs = " ".join(sorted(os.path.basename(r) for r in e["references"]))
        for k, v in [("StorePath", e["path"]), ("NarHash", e["narHash"]), ("NarSize", str(e["narSize"])),
                     ("References", want_refs), ("Compression", comp)]:
            if kv.get(k) != v:
                problems.append(f"{f}: {k}={kv.get(k)!r}, expected {v!r}")
        url = kv.get("URL", "")
        if not url.endswith(".nar" + EXT[comp]):
            problems.append(f"{f}: URL {url!r}")
        nar = os.path.join(out, url)
        if not os.path.isfile(nar):
            problems.append(f"{f}: missing {url}")
            continue
        if str(os.path.getsize(nar)) != kv.get("FileSize"):
            problems.append(f"{f}: FileSize {kv.get('FileSize')} != {os.path.getsize(nar)}")
        if verify_file_hash:
            h = hashlib.sha256()
            with open(nar, "rb") as fh:
                while True:
                    b = fh.read(1 << 20)
                    if not b:
                        break
                    h.update(b)
            if kv.get("FileHash") != "sha256:" + fixtures.nix32(h.digest()):
                problems.append(f"{f}: FileHash mismatch")
        if len(problems) > 20:
            break
    return problems


CLOSURES = ["mixed", "bigfile", "small"]


def build_fixture(name, work, mode):
    """The root store path of the named benchmark closure, built (or cached) in the store."""
    return {"mixed": fixtures.build_mixed, "bigfile": fixtures.build_bigfile,
            "small": fixtures.build_small}[name](work, mode)


def keep_output(closure):
    """Whether a method's output stays until the end of the run instead of being deleted before the
    next method: for thousands of files. After files are deleted, ext4 checks every inode it
    allocates in the next 30 s against the recently deleted ones (`recently_deleted` took 30% of
    the samples of a perf profile of the next run), which would slow down whichever method
    comes next."""
    return len(closure) > 1000


def warm_up(closure):
    """Read every path once so all methods start with a warm page cache (in this process: a
    `nix-store --dump` per path would take minutes for 10,000 paths)."""
    t = time.time()

    def read(p):
        st = os.lstat(p)
        if stat.S_ISDIR(st.st_mode):
            for n in os.listdir(p):
                read(os.path.join(p, n))
        elif stat.S_ISREG(st.st_mode):
            with open(p, "rb") as f:
                while f.read(1 << 20):
                    pass
    for e in closure:
        read(e["path"])
    log(f"warm-up: read {len(closure)} paths in {time.time() - t:.1f} s")


def method_cmd(method, comp, root, closure, out, build_top, binary):
    """Return (cmd, env) for one method."""
    base_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": os.environ.get("HOME", "/root")}
    if method in ("ours", "nixpkgs"):
        attrs = {"closure": closure, "outputs": {"out": out}, "compression": comp, "rootPaths": [root]}
        attrs_file = os.path.join(build_top, ".attrs.json")
        with open(attrs_file, "w") as f:
            json.dump(attrs, f)
        env = {"NIX_ATTRS_JSON_FILE": attrs_file, "NIX_BUILD_CORES": str(CORES), "NIX_BUILD_TOP": build_top,
               "NIX_STORE": "/nix/store", "TMPDIR": build_top, "TMP": build_top, "TEMP": build_top,
               "TEMPDIR": build_top}
        if method == "ours":
            # as inside a Nix build: no PATH, no HOME
            env.update({"PATH": "/path-not-set", "HOME": "/homeless-shelter"})
            return [binary], env
        env.update(base_env)
        return [sys.executable, os.path.join(HERE, "nixpkgs_method.py")], env
    if method == "ours-to":
        # `build --to` into a new directory, from the local store, with every core.
        env = dict(base_env, NIX_USER_CONF_FILES="")
        if "NIX_CONF_DIR" in os.environ:
            env["NIX_CONF_DIR"] = os.environ["NIX_CONF_DIR"]
        return [binary, "build", "--quiet", "--to", out, "--compression", comp, root], env
    url = f"file://{out}?compression={comp}"
    if method == "nix-copy-parallel":
        url += "&parallel-compression=true"
    cmd = ["nix", "--extra-experimental-features", "nix-command", "copy", "--option", "substituters", "",
           "--to", url, root]
    return cmd, base_env


def methods_for(closure, comp, wanted):
    ms = ["ours", "nix-copy"]
    if comp == "xz":
        ms.append("nix-copy-parallel")
    if closure != "small":
        # The nixpkgs method spawns five processes per path: about 5 minutes for 10,000 paths.
        ms.append("nixpkgs")
    return [m for m in ms if m in wanted]


# Closures whose runs are short and noisy (thousands of file creations, which a shared machine's
# other work slows down the most) are run several times; the report gives the median.
REPEATS = {"small": 3}


def run_method(name, method, comp, root, closure, out, run_dir, binary, gate, tag):
    """One timed run of `method`, its cache checked; its output kept or deleted (see keep_output)."""
    build_top = os.path.join(run_dir, "build-top")
    shutil.rmtree(build_top, ignore_errors=True)
    os.makedirs(build_top)
    cmd, env = method_cmd(method, comp, root, closure, out, build_top, binary)
    os.sync()
    waited, busy = gate()
    log(f"{tag} ... (waited {waited:.0f} s for an idle machine"
        + (f", busy {busy:.0%} then)" if busy is not None else ")"))
    r = timed(cmd, env, os.path.join(run_dir, "time-rss.txt"))
    r.update({"closure": name, "compression": comp, "method": method,
              "idle_wait": waited, "busy_before": busy})
    if r["rc"] == 0:
        r["out_bytes"] = dir_bytes(out)
        r["problems"] = check_cache(out, closure, comp, verify_file_hash=method.startswith("ours"))
    else:
        r["out_bytes"] = None
        r["problems"] = [f"exit code {r['rc']}"]
        log(f"FAILED ({r['rc']}): {r['log'][-1500:]}")
    if not method.startswith("ours") or r["rc"] == 0:
        r.pop("log")
    log(f"{tag}: wall {r['wall']:.2f} s, cpu {r['cpu']:.2f} s, "
        f"rss {r['rss_mib']:.0f} MiB, out {(r['out_bytes'] or 0) / MiB:.1f} MiB, "
        f"other cpu {r['other_cpu']:.1f} s, check: {'OK' if not r['problems'] else r['problems'][:3]}")
    if not keep_output(closure):
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(build_top, ignore_errors=True)
    os.sync()
    return r


def write_table(out, lines):
    """Write the Markdown table `lines` to OUT.md, print it and return its text."""
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out + ".md", "w") as f:
        f.write(text)
    print(text)
    return text


def median_run(tries):
    """The run to report of several of one method: a failed or faulty one if any (a failure is never
    averaged away), else the median by wall time; every run's wall time is kept with it."""
    bad = [r for r in tries if r["rc"] != 0 or r["problems"]]
    chosen = bad[0] if bad else sorted(tries, key=lambda r: r["wall"])[len(tries) // 2]
    return {**chosen, "walls": [r["wall"] for r in tries]}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small fixtures (~50 MB closure, 100 MB file)")
    ap.add_argument("--only", default=",".join(COMPRESSIONS), help="compressions, e.g. zstd or none,zstd")
    ap.add_argument("--closures", default="mixed,bigfile,small", help="mixed,bigfile,small")
    ap.add_argument("--methods", default=",".join(ALL_METHODS), help=",".join(ALL_METHODS))
    ap.add_argument("--binary", help="mk-binary-cache binary (bench/run builds one)")
    ap.add_argument("--no-limit", action="store_true", help="skip measuring the limit")
    ap.add_argument("--repeat", type=int, default=0,
                    help="runs of each method, reported as their median (default: 3 for the small paths, "
                         "1 otherwise)")
    ap.add_argument("--work", default=os.environ.get("BENCH_WORK", "/var/tmp/mk-binary-cache-bench"))
    ap.add_argument("--report", help="write the Markdown report here (default: BENCHMARKS.md for a full "
                                     "run with everything, bench/results/<mode>.md otherwise)")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="before each timed run, wait up to this many seconds for an idle machine "
                         "(default 120, 10 with --quick; 0 disables)")
    ap.add_argument("--quiet-budget", type=float, default=None,
                    help="total seconds of such waiting in one run (default 600, 60 with --quick)")
    ap.add_argument("--build-note", default="", help="text about the binary's build, for the report")
    args = ap.parse_args()

    mode = "quick" if args.quick else "full"
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else (10 if args.quick else 120)
    quiet_budget = [args.quiet_budget if args.quiet_budget is not None else (60 if args.quick else 600)]

    def gate():
        w = min(quiet_wait, quiet_budget[0])
        if w <= 0:
            return 0.0, None
        waited, busy = wait_quiet(w)
        quiet_budget[0] -= waited
        return waited, busy
    comps = [c for c in COMPRESSIONS if c in args.only.split(",")]
    closures_wanted = args.closures.split(",")
    methods_wanted = args.methods.split(",")
    if "ours" in methods_wanted and not (args.binary and os.access(args.binary, os.X_OK)):
        log("no usable mk-binary-cache binary: skipping 'ours'")
        methods_wanted = [m for m in methods_wanted if m != "ours"]
    os.makedirs(args.work, exist_ok=True)
    # one run directory per process: several runs may share the work directory (and the machine)
    for d in os.listdir(args.work):
        if d.startswith("run-") and d[4:].isdigit() and not os.path.exists(f"/proc/{d[4:]}"):
            shutil.rmtree(os.path.join(args.work, d), ignore_errors=True)
    run_dir = os.path.join(args.work, f"run-{os.getpid()}")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(run_dir)

    roots = {name: build_fixture(name, args.work, mode) for name in CLOSURES if name in closures_wanted}
    closures = {name: fixtures.closure_info(r) for name, r in roots.items()}
    for name, ci in closures.items():
        log(f"closure {name}: {len(ci)} paths, {sum(e['narSize'] for e in ci) / MiB:.1f} MiB NAR, "
            f"largest {max(e['narSize'] for e in ci) / MiB:.1f} MiB")

    results = {
        "mode": mode, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"cores": os.cpu_count(), "cpu": cpu_model(), "kernel": platform.release(),
                    "nix": tool_version(["nix", "--version"]), "zstd": tool_version(["zstd", "--version"]),
                    "xz": tool_version(["xz", "--version"]).splitlines()[0],
                    "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30), 1)},
        "build_note": args.build_note,
        "closures": {name: {"root": roots[name], "paths": len(ci), "nar_bytes": sum(e["narSize"] for e in ci),
                            "largest": max(e["narSize"] for e in ci)} for name, ci in closures.items()},
        "compressions": comps,
        "runs": [],
        "limit": None,
    }

    if not args.no_limit:
        gate()
        # Many small paths: the cost that bounds them is creating files, not compressing bytes.
        big = {name: ci for name, ci in closures.items() if name != "small"}
        results["limit"] = {}
        if big:
            log("measuring the limit (read + sha256 + single-threaded zstd -3 / xz -6 per NAR)")
            results["limit"] = limit.measure(big, comps, cores=CORES, log=log)
        if "small" in closures:
            # Measured between the methods' runs, below.
            file_writes = limit.FileWrites(closures["small"])

    for name, ci in closures.items():
        warm_up(ci)
        repeats = args.repeat or REPEATS.get(name, 1)
        for comp in comps:
            methods = methods_for(name, comp, methods_wanted)
            tries = {method: [] for method in methods}
            # Round after round of every method, so that a noisy spell on the shared machine falls on
            # all of them, not on one.
            for rep in range(repeats):
                if name == "small" and not args.no_limit:
                    # Kept until the end of the run, as the methods' outputs: see keep_output.
                    gate()
                    file_writes.measure(os.path.join(run_dir, f"write-limit-{comp}-{rep}"), log=log)
                for method in methods:
                    tag = f"{name} {comp} {method}" + (f" (run {rep + 1} of {repeats})" if repeats > 1 else "")
                    out = os.path.join(run_dir, f"{name}-{comp}-{method}-{rep}")
                    tries[method].append(run_method(name, method, comp, roots[name], ci, out, run_dir, args.binary,
                                                    gate, tag))
            for method in methods:
                results["runs"].append(median_run(tries[method]))
        if name == "small" and not args.no_limit:
            results["limit"]["small"] = file_writes.result(CORES)

    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    full_set = (mode == "full" and comps == COMPRESSIONS and set(closures) == set(CLOSURES))
    tag = mode if full_set or mode == "quick" else f"{mode}-partial"
    json_path = os.path.join(HERE, "results", f"{tag}.json")
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1)
    report_path = args.report or (os.path.join(HERE, "..", "BENCHMARKS.md") if full_set
                                  else os.path.join(HERE, "results", f"{tag}.md"))
    chart_path = os.path.join(HERE, "chart.svg" if full_set and not args.report else f"results/{tag}-chart.svg")
    text = report.write(results, report_path, chart_path, command=os.environ.get("BENCH_CMD") or " ".join(["bench/bench.py"] + sys.argv[1:]))
    print(text)
    log(f"wrote {os.path.relpath(report_path)}, {os.path.relpath(chart_path)}, {os.path.relpath(json_path)}")
    return 0


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def tool_version(cmd):
    try:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout.strip()
    except OSError:
        return "missing"


if __name__ == "__main__":
    sys.exit(main())
