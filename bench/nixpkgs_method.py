#!/usr/bin/env python3
"""Peer method for the benchmark: the way nixpkgs' mkBinaryCache builds a cache,
re-implemented from its description (not our product, and not nixpkgs' code).

Same interface as mk-binary-cache inside a Nix build: no arguments, the
derivation attributes in $NIX_ATTRS_JSON_FILE ("closure", "outputs.out",
"compression"), $NIX_BUILD_CORES workers.

Per store path, in a pool of NIX_BUILD_CORES workers:
    nix-store --dump PATH | zstd  (or xz, or nothing for "none") > tmp file
    nix-hash --type sha256 --base32 --flat tmp file   -> FileHash
    cat tmp file | wc -c                                -> FileSize (reads it again)
    mv tmp file -> nar/<FileHash>.nar<ext>
then write <hashpart>.narinfo with NarHash/NarSize/References from the JSON.
"""

import concurrent.futures
import json
import os
import subprocess
import sys

EXT = {"zstd": ".zst", "xz": ".xz", "none": ""}
FILTER = {"zstd": "zstd", "xz": "xz", "none": "cat"}

SCRIPT = r'''
set -eo pipefail
nix-store --dump "$1" | $2 > "$3"
nix-hash --type sha256 --base32 --flat "$3"
cat "$3" | wc -c
'''


def main():
    attrs = json.load(open(os.environ["NIX_ATTRS_JSON_FILE"]))
    out = attrs["outputs"]["out"]
    comp = attrs.get("compression", "zstd")
    cores = int(os.environ.get("NIX_BUILD_CORES", "1")) or os.cpu_count()
    os.makedirs(os.path.join(out, "nar"))
    with open(os.path.join(out, "nix-cache-info"), "w") as f:
        f.write("StoreDir: /nix/store\n")

    def one(i, entry):
        tmp = os.path.join(out, "nar", f".tmp-{i}")
        res = subprocess.run(["bash", "-c", SCRIPT, "worker", entry["path"], FILTER[comp], tmp],
                             check=True, stdout=subprocess.PIPE, text=True).stdout.split()
        file_hash, file_size = res[0], int(res[1])
        url = f"nar/{file_hash}.nar{EXT[comp]}"
        os.rename(tmp, os.path.join(out, url))
        base = os.path.basename(entry["path"])
        refs = " ".join(sorted(os.path.basename(r) for r in entry["references"]))
        text = (f"StorePath: {entry['path']}\nURL: {url}\nCompression: {comp}\n"
                f"FileHash: sha256:{file_hash}\nFileSize: {file_size}\n"
                f"NarHash: {entry['narHash']}\nNarSize: {entry['narSize']}\nReferences: {refs}\n")
        with open(os.path.join(out, base.split("-", 1)[0] + ".narinfo"), "w") as f:
            f.write(text)

    with concurrent.futures.ThreadPoolExecutor(cores) as pool:
        for f in [pool.submit(one, i, e) for i, e in enumerate(attrs["closure"])]:
            f.result()
    return 0


if __name__ == "__main__":
    sys.exit(main())
