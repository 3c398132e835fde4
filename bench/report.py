"""Markdown table, target checks and an SVG bar chart for the benchmark results."""

import html
import os

MiB = 1 << 20
METHOD_LABEL = {
    "ours": "mk-binary-cache",
    "nix-copy": "nix copy",
    "nix-copy-parallel": "nix copy parallel-compression",
    "nixpkgs": "nixpkgs method (script)",
    "limit": "the limit",
}
COLORS = {"ours": "#2b7bb9", "nix-copy": "#e07b39", "nix-copy-parallel": "#c4502b",
          "nixpkgs": "#6a9f3c", "limit": "#9e9e9e"}
CLOSURE_LABEL = {"mixed": "mixed closure", "bigfile": "single big file", "small": "10,000 small paths"}


def find(results, closure, comp, method):
    for r in results["runs"]:
        if r["closure"] == closure and r["compression"] == comp and r["method"] == method:
            return r
    return None


def ok_wall(r):
    return r["wall"] if r and r["rc"] == 0 else None


def limit_of(results, closure, comp):
    lim = (results.get("limit") or {}).get(closure, {})
    if "limit_write" in lim:
        # Small paths: writing the files bounds every compression but xz (see limit.FileWrites).
        return lim["limit_write"] if comp in ("none", "zstd") else None
    return lim.get(f"limit_{comp}")


def targets(results):
    """List of (target text, measured text, passed: True/False/None)."""
    out = []

    def ratio(a, b):
        return a / b if a is not None and b else None

    def add(text, value, ok, fmt="{:.2f}x"):
        if value is None:
            out.append((text, "n/a", False if ok is not None else None))
        else:
            out.append((text, fmt.format(value), ok(value)))

    closures = list(results["closures"])
    comps = results["compressions"]
    for cl in closures:
        lbl = CLOSURE_LABEL.get(cl, cl)
        ours = {c: ok_wall(find(results, cl, c, "ours")) for c in comps}
        if cl == "small":
            if "zstd" in comps:
                add(f"{lbl}, zstd: within 1.5x of the limit of writing the files (ours / limit <= 1.5)",
                    ratio(ours["zstd"], limit_of(results, cl, "zstd")), lambda v: v <= 1.5)
                add(f"{lbl}, zstd: >= 3x faster than nix copy (nix copy / ours >= 3)",
                    ratio(ok_wall(find(results, cl, "zstd", "nix-copy")), ours["zstd"]), lambda v: v >= 3.0)
            continue
        if "zstd" in comps:
            add(f"{lbl}, zstd: ours within 1.2x of the limit (ours / limit <= 1.2)",
                ratio(ours["zstd"], limit_of(results, cl, "zstd")), lambda v: v <= 1.2)
            add(f"{lbl}, zstd: >= 2x faster than nix copy (nix copy / ours >= 2)",
                ratio(ok_wall(find(results, cl, "zstd", "nix-copy")), ours["zstd"]), lambda v: v >= 2.0)
        if "none" in comps:
            add(f"{lbl}, none: >= 1.5x faster than nix copy (nix copy / ours >= 1.5)",
                ratio(ok_wall(find(results, cl, "none", "nix-copy")), ours["none"]), lambda v: v >= 1.5)
        if "xz" in comps:
            if cl == "mixed":
                add(f"{lbl}, xz: within 1.05x of the limit (ours / limit <= 1.05)",
                    ratio(ours["xz"], limit_of(results, cl, "xz")), lambda v: v <= 1.05)
                add(f"{lbl}, xz: >= 1.2x faster than nix copy parallel (parallel / ours >= 1.2)",
                    ratio(ok_wall(find(results, cl, "xz", "nix-copy-parallel")), ours["xz"]), lambda v: v >= 1.2)
                add(f"{lbl}, xz: never slower than the nixpkgs method (nixpkgs / ours >= 1)",
                    ratio(ok_wall(find(results, cl, "xz", "nixpkgs")), ours["xz"]), lambda v: v >= 1.0)
            else:
                add(f"{lbl}, xz: >= 1.8x faster than the nixpkgs method (nixpkgs / ours >= 1.8)",
                    ratio(ok_wall(find(results, cl, "xz", "nixpkgs")), ours["xz"]), lambda v: v >= 1.8)
                add(f"{lbl}, xz: no slower than nix copy parallel (parallel / ours >= 1)",
                    ratio(ok_wall(find(results, cl, "xz", "nix-copy-parallel")), ours["xz"]), lambda v: v >= 1.0)
    ours_runs = [r for r in results["runs"] if r["method"] == "ours"]
    if ours_runs:
        failed = [r for r in ours_runs if r["rc"] != 0]
        other = [r for r in ours_runs if r["compression"] != "xz"]
        if other:
            worst = max(r["rss_mib"] for r in other)
            add("peak RSS < 200 MiB in every run of ours but xz", worst,
                lambda v: v < 200 and not failed, "{:.0f} MiB max")
        for r in [r for r in ours_runs if r["compression"] == "xz"]:
            # xz's 24 MiB blocks (Nix's) cost what they cost Nix: two encoders of ~140 MiB each.
            peer = find(results, r["closure"], "xz", "nix-copy-parallel")
            bound = max(peer["rss_mib"], 285) if peer else 285
            add(f"{CLOSURE_LABEL.get(r['closure'], r['closure'])}, xz: peak RSS <= nix copy parallel's "
                f"({bound:.0f} MiB)", r["rss_mib"], lambda v, b=bound: v <= b and r["rc"] == 0, "{:.0f} MiB")
        bad = [r for r in ours_runs if r["problems"]]
        out.append(("every cache of ours checks out (narinfos == paths, fields, FileSize, FileHash)",
                    f"{len(ours_runs) - len(bad)}/{len(ours_runs)} OK", not bad))
    else:
        out.append(("mk-binary-cache ran", "not run (no usable binary)", False))
    return out


def fmt(v, spec):
    return "-" if v is None else spec.format(v)


def spread(values):
    """` (lo–hi of n)` for repeated measurements, nothing for one."""
    if not values or len(values) < 2:
        return ""
    return f" ({min(values):.2f}–{max(values):.2f} of {len(values)})"


def table(results):
    rows = ["| closure | compression | method | wall s | CPU s | peak RSS MiB | output MiB | "
            "peer wall / ours | wall / limit | other CPU s | cache check |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for cl in results["closures"]:
        for comp in results["compressions"]:
            ours = ok_wall(find(results, cl, comp, "ours"))
            lim = limit_of(results, cl, comp)
            for r in [r for r in results["runs"] if r["closure"] == cl and r["compression"] == comp]:
                w = ok_wall(r)
                peer = "-" if r["method"] == "ours" else fmt(w / ours if w and ours else None, "{:.2f}x")
                check = "OK" if not r["problems"] else ("FAIL: " + "; ".join(r["problems"][:2])).replace("|", "/")
                rows.append(f"| {CLOSURE_LABEL.get(cl, cl)} | {comp} | {METHOD_LABEL[r['method']]} | "
                            f"{fmt(w, '{:.2f}') + spread(r.get('walls')) if w is not None else 'failed'} | "
                            f"{r['cpu']:.2f} | "
                            f"{r['rss_mib']:.0f} | {fmt(r['out_bytes'] / MiB if r['out_bytes'] else None, '{:.1f}')} | "
                            f"{peer} | {fmt(w / lim if w and lim else None, '{:.2f}x')} | "
                            f"{r['other_cpu']:.1f} | {check} |")
            if lim is not None:
                rows.append(f"| {CLOSURE_LABEL.get(cl, cl)} | {comp} | **the limit** | {lim:.2f} | "
                            f"{results['limit'][cl].get('write_cpu', lim * results['limit'][cl]['cores']):.2f} | - | - | - | "
                            "1.00x | - | - |")
    return "\n".join(rows)


def limit_table(results):
    lim = results.get("limit")
    if not lim:
        return "(the limit was not measured in this run)"
    rows = ["| closure | NAR MiB | read s | sha256 NAR s | zstd -3 s | sha256 .zst s | .zst MiB | "
            "xz -6 s | sha256 .xz s | .xz MiB | limit none s | limit zstd s | limit xz s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for cl, r in lim.items():
        if "limit_write" in r:
            continue

        def g(k, spec="{:.2f}", div=1):
            return fmt(r[k] / div if k in r else None, spec)
        rows.append(f"| {CLOSURE_LABEL.get(cl, cl)} | {r['nar_bytes'] / MiB:.1f} | {g('read_cpu')} | {g('hash_cpu')} | "
                    f"{g('zstd_cpu')} | {g('zstd_hash_cpu')} | {g('zstd_bytes', '{:.1f}', MiB)} | "
                    f"{g('xz_cpu')} | {g('xz_hash_cpu')} | {g('xz_bytes', '{:.1f}', MiB)} | "
                    f"{g('limit_none')} | {g('limit_zstd')} | {g('limit_xz')} |")
    writes = [(cl, r) for cl, r in lim.items() if "limit_write" in r]
    if writes:
        rows += ["", "| closure | files written | MiB | write wall s (1 thread) | write CPU s | limit s |",
                 "|---|---:|---:|---:|---:|---:|"]
        for cl, r in writes:
            rows.append(f"| {CLOSURE_LABEL.get(cl, cl)} | {r['files']} | {r['bytes'] / MiB:.1f} | "
                        f"{r['write_wall']:.2f} | {r['write_cpu']:.2f}{spread(r.get('write_cpus'))} | "
                        f"{r['limit_write']:.2f} |")
    return "\n".join(rows)


def chart(results, path):
    """Horizontal bar chart, one panel per closure x compression, each panel on its own scale."""
    panels = []
    for cl in results["closures"]:
        for comp in results["compressions"]:
            bars = [(r["method"], ok_wall(r)) for r in results["runs"]
                    if r["closure"] == cl and r["compression"] == comp]
            lim = limit_of(results, cl, comp)
            if lim is not None:
                bars.append(("limit", lim))
            if bars:
                panels.append((f"{CLOSURE_LABEL.get(cl, cl)}, {comp}", bars))
    W, label_w, bar_h, gap = 860, 230, 18, 4
    y = 40
    parts = []
    for title, bars in panels:
        parts.append(f'<text x="10" y="{y}" font-weight="bold">{html.escape(title)} '
                     f'(wall seconds, shorter is better)</text>')
        y += 8
        vmax = max((v for _, v in bars if v), default=1) or 1
        for m, v in bars:
            w = 0 if v is None else (W - label_w - 90) * v / vmax
            parts.append(f'<text x="{label_w - 6}" y="{y + bar_h - 5}" text-anchor="end">'
                         f'{html.escape(METHOD_LABEL[m])}</text>')
            if v is None:
                parts.append(f'<text x="{label_w + 4}" y="{y + bar_h - 5}" fill="#b00">failed</text>')
            else:
                parts.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{COLORS[m]}"/>')
                parts.append(f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h - 5}">{v:.2f} s</text>')
            y += bar_h + gap
        y += 26
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{y}" font-family="sans-serif" '
            f'font-size="12"><rect width="100%" height="100%" fill="white"/>'
            f'<text x="10" y="20" font-size="15" font-weight="bold">mk-binary-cache benchmark '
            f'({results["mode"]}, {results["date"]}, {results["machine"]["cores"]} cores)</text>')
    with open(path, "w") as f:
        f.write(head + "".join(parts) + "</svg>\n")


def write(results, report_path, chart_path, command):
    chart(results, chart_path)
    rel_chart = os.path.relpath(chart_path, os.path.dirname(os.path.abspath(report_path)))
    m = results["machine"]
    tg = targets(results)
    lines = [
        "# Benchmarks",
        "",
        f"Run: `{command}` ({results['mode']} mode), {results['date']}.",
        f"Machine: {m['cores']} cores ({m['cpu']}), {m['mem_gib']} GiB RAM, Linux {m['kernel']}; "
        f"{m['nix']}; zstd CLI: {m['zstd'].replace('*', '').strip()}; {m['xz']}.",
        f"Binary: {results.get('build_note') or 'n/a'}",
        "",
        f"![benchmark chart]({rel_chart})",
        "",
        "## Closures",
        "",
    ]
    for cl, c in results["closures"].items():
        lines.append(f"- **{CLOSURE_LABEL.get(cl, cl)}**: {c['paths']} store paths, "
                     f"{c['nar_bytes'] / MiB:.1f} MiB of NAR, largest path {c['largest'] / MiB:.1f} MiB "
                     f"(root `{c['root']}`).")
    lines += [
        "",
        "The mixed closure is built from deterministic selections of this machine's /usr (shared libraries,",
        "ELF binaries, /usr/share trees such as man pages, locales and docs, Python modules, symlinks), one",
        "~150 MB path (the largest libraries and compiler binaries), `builtins.toFile` profile paths that",
        "reference groups of the others and a `builtins.toFile` root referencing them all. The big file is",
        "one store path holding one generated file (seeded PRNG: log-like text, fixed-width records,",
        "near-duplicate blocks, sparse blocks, incompressible blocks). The small paths are 10,000",
        "`builtins.toFile` leaves of 1-4 KiB of seeded word text, 100 `builtins.toFile` groups listing",
        "100 leaves each, and a root listing the groups. All are cached in the store.",
        "",
        "## Results",
        "",
        table(results),
        "",
        "- wall: elapsed time of the whole command. CPU: user+sys of the process tree (wait4 rusage).",
        "  Where a method ran several times (the small paths: 3 rounds of every method, one after the",
        "  other), the row is the run of median wall time, followed by the lowest and highest of the runs.",
        "  Peak RSS: ru_maxrss of the tree (the largest single process). Output: bytes of all files written.",
        "- peer wall / ours: how many times longer the peer took than mk-binary-cache with the same compression.",
        "- other CPU: CPU time used on the machine during the run by processes outside the measured tree",
        "  (from /proc/stat); a large value means the run shared the 2 cores with other work.",
        "- Every file of every path is read once before a closure's runs, so every method starts with a",
        "  warm page cache (dropping caches is not possible everywhere). Each output is deleted (for",
        "  closures of over 1,000 paths, at the end of the run instead: see `bench.keep_output`) and",
        "  `sync` is run between methods.",
        "- Methods: mk-binary-cache runs as inside a Nix build (no arguments, `NIX_ATTRS_JSON_FILE`, "
        "`NIX_BUILD_CORES=2`, empty PATH);",
        "  `nix copy --to 'file://DIR?compression=...'` (`&parallel-compression=true` for the parallel row);",
        "  the nixpkgs method is `bench/nixpkgs_method.py`: 2 workers, each per path "
        "`nix-store --dump | zstd` (or `xz`, or `cat`), then",
        "  `nix-hash --type sha256 --base32 --flat` on the file and `cat | wc -c` for its size, then a narinfo.",
        "",
        "## The limit",
        "",
        "The limit is the summed single-thread CPU cost of reading, hashing and compressing every NAR,",
        "divided by the number of cores (2):",
        "",
        limit_table(results),
        "",
        "Measured by `bench/limit.py`: each NAR is serialized once by a small NAR writer (checked against",
        "the path's narHash) and the CPU time of its filesystem calls is the *read* cost; sha256 of the NAR",
        "(OpenSSL via hashlib); the `zstd -3 -T1` and `xz -6 -T1` CLIs on the NAR (child user+sys time);",
        "sha256 of the compressed output. Jobs run in a pool of 2 single-threaded workers; only CPU times are",
        "added up. limit(none) = (read + sha256) / 2; limit(zstd|xz) = (read + sha256 + compress + sha256 of",
        "the output) / 2. Writing the output is not included. It is a lower bound only for perfect 2-core",
        "scaling with these tools' compressors (zstd CLI and liblzma of the system, which may differ in speed",
        "from the versions bundled in our binary).",
        "",
        "For the small paths, creating files costs more than their bytes, so their limit (for none and zstd)",
        "is the cost of writing the cache's files alone: one NAR file and one narinfo per path, uncompressed,",
        "made beforehand and written by one thread (open, write, close) into the output's file system;",
        "limit = that thread's CPU time (user+sys), not divided by the cores: creating entries in one",
        "directory takes its lock, so a second thread would mostly wait (`limit.FileWrites`).",
        "Nothing is read, hashed or renamed. It is measured before each round of the methods' runs, into",
        "a new directory, and the median is the limit.",
        "",
        "## Targets",
        "",
        "| target | measured | result |",
        "|---|---:|---|",
    ]
    for text, value, ok in tg:
        lines.append(f"| {text} | {value} | {'PASS' if ok else 'n/a' if ok is None else 'FAIL'} |")
    lines.append("")
    text = "\n".join(lines)
    kept = kept_sections(report_path)
    with open(report_path, "w") as f:
        f.write(text + kept)
    return text


# What follows this line in the report is written by hand (studies made with bench/candidates.py,
# bench/scaling.py and targeted runs), and a new run keeps it.
KEEP_MARKER = "<!-- Below: kept by bench/run. -->"


def kept_sections(report_path):
    try:
        with open(report_path) as f:
            old = f.read()
    except FileNotFoundError:
        return ""
    at = old.find(KEEP_MARKER)
    return "\n" + old[at:] if at >= 0 else ""
