""""The limit": the summed single-thread cost of reading, hashing and compressing
every NAR of a closure, divided by the number of cores.

How it is measured, per store path:
1. read: the NAR is produced once by a small NAR serializer in this file
   (checked against the closure's narHash, so it is the exact NAR); the CPU
   time (thread CPU clock) spent in the filesystem calls (lstat, listdir,
   readlink, open/read of file contents) is the "read" cost.
   The NAR is kept in /dev/shm for the next steps; writing it there is not counted.
2. hash: thread CPU time of sha256 (hashlib/OpenSSL, SHA-NI) over the NAR.
3. compress: `zstd -3 -T1 -c` and `xz -6 -T1 -c` (the CLI tools, single-threaded)
   on the NAR file; the child's user+sys CPU time (wait4 rusage).
4. hash of the compressed output (FileHash): thread CPU time of sha256 over
   the compressor's stdout as it is read.
limit(none) = (read + hash) / cores
limit(c)    = (read + hash + compress_c + hash of compressed_c) / cores
The per-path jobs run in a pool of `cores` workers (each single-threaded), so
the CPU times are measured under the same 2-busy-cores condition as the
methods themselves; only CPU times are summed, never wall times.
"""

import concurrent.futures
import hashlib
import os
import stat
import subprocess
import threading
import time

from fixtures import nix32

CHUNK = 1 << 20
COMPRESSORS = {"zstd": ["zstd", "-3", "-T1", "-c", "-q"], "xz": ["xz", "-6", "-T1", "-c"]}


class NarDump:
    """Write the NAR of `path` to `out` (a file object); account read and hash CPU."""

    def __init__(self, out):
        self.out = out
        self.h = hashlib.sha256()
        self.buf = bytearray()
        self.read_cpu = 0.0
        self.hash_cpu = 0.0
        self.size = 0

    def _flush(self):
        t = time.thread_time()
        self.h.update(self.buf)
        self.hash_cpu += time.thread_time() - t
        self.out.write(self.buf)
        self.size += len(self.buf)
        self.buf = bytearray()

    def _emit(self, b):
        self.buf += b
        if len(self.buf) >= CHUNK:
            self._flush()

    def _str(self, s):
        self._emit(len(s).to_bytes(8, "little") + s + b"\0" * (-len(s) % 8))

    def _obj(self, p):
        t = time.thread_time()
        st = os.lstat(p)
        self.read_cpu += time.thread_time() - t
        self._str(b"(")
        if stat.S_ISREG(st.st_mode):
            self._str(b"type")
            self._str(b"regular")
            if st.st_mode & stat.S_IXUSR:
                self._str(b"executable")
                self._str(b"")
            self._str(b"contents")
            self._emit(st.st_size.to_bytes(8, "little"))
            t = time.thread_time()
            fd = os.open(p, os.O_RDONLY)
            self.read_cpu += time.thread_time() - t
            left = st.st_size
            try:
                while left > 0:
                    t = time.thread_time()
                    data = os.read(fd, min(CHUNK, left))
                    self.read_cpu += time.thread_time() - t
                    if not data:
                        raise RuntimeError(f"{p}: file shrank")
                    left -= len(data)
                    self._emit(data)
            finally:
                os.close(fd)
            self._emit(b"\0" * (-st.st_size % 8))
        elif stat.S_ISLNK(st.st_mode):
            t = time.thread_time()
            target = os.readlink(p)
            self.read_cpu += time.thread_time() - t
            self._str(b"type")
            self._str(b"symlink")
            self._str(b"target")
            self._str(target)
        elif stat.S_ISDIR(st.st_mode):
            t = time.thread_time()
            names = sorted(os.listdir(p))
            self.read_cpu += time.thread_time() - t
            self._str(b"type")
            self._str(b"directory")
            for n in names:
                self._str(b"entry")
                self._str(b"(")
                self._str(b"name")
                self._str(n)
                self._str(b"node")
                self._obj(os.path.join(p, n))
                self._str(b")")
        else:
            raise RuntimeError(f"{p}: unsupported file type")
        self._str(b")")

    def dump(self, path):
        self._str(b"nix-archive-1")
        self._obj(os.fsencode(path))
        self._flush()
        return "sha256:" + nix32(self.h.digest())


def compress_cost(cmd, nar_file):
    """Run cmd on nar_file; return (child CPU seconds, thread CPU of hashing stdout, output size)."""
    with open(nar_file, "rb") as f:
        proc = subprocess.Popen(cmd, stdin=f, stdout=subprocess.PIPE)
    h = hashlib.sha256()
    hash_cpu = 0.0
    size = 0
    while True:
        data = proc.stdout.read(CHUNK)
        if not data:
            break
        t = time.thread_time()
        h.update(data)
        hash_cpu += time.thread_time() - t
        size += len(data)
    proc.stdout.close()
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {proc.returncode}")
    return ru.ru_utime + ru.ru_stime, hash_cpu, size


def measure(closures, compressions, cores=2, shm="/dev/shm", log=print):
    """closures: {name: closure_info list}. Returns {name: {...totals...}}.

    Jobs: one dump job per path (read+hash), then one compress job per path and
    compression. Scheduled longest-first over a pool of `cores` workers.
    """
    results = {name: {"paths": len(ci), "nar_bytes": sum(e["narSize"] for e in ci),
                      "read_cpu": 0.0, "hash_cpu": 0.0,
                      **{f"{c}_cpu": 0.0 for c in compressions},
                      **{f"{c}_hash_cpu": 0.0 for c in compressions},
                      **{f"{c}_bytes": 0 for c in compressions}}
               for name, ci in closures.items()}
    lock = threading.Lock()
    comp = [c for c in compressions if c in COMPRESSORS]
    tasks = []
    for name, ci in closures.items():
        for e in ci:
            tasks.append((name, e))
    tasks.sort(key=lambda t: -t[1]["narSize"])
    pending = {}
    errors = []
    t0 = time.time()

    def do_compress(name, e, c, nar_file):
        cpu, hcpu, size = compress_cost(COMPRESSORS[c], nar_file)
        with lock:
            r = results[name]
            r[f"{c}_cpu"] += cpu
            r[f"{c}_hash_cpu"] += hcpu
            r[f"{c}_bytes"] += size
            pending[nar_file] -= 1
            last = pending[nar_file] == 0
        if last:
            os.unlink(nar_file)

    with concurrent.futures.ThreadPoolExecutor(cores) as pool:
        futs = []
        for i, (name, e) in enumerate(tasks):
            nar_file = os.path.join(shm, f"mkbc-limit-{os.getpid()}-{i}.nar")
            with open(nar_file, "wb") as f:
                d = NarDump(f)
                nh = d.dump(e["path"])
            if nh != e["narHash"] or d.size != e["narSize"]:
                errors.append(f"{e['path']}: NAR mismatch {nh} {d.size} vs {e['narHash']} {e['narSize']}")
            with lock:
                results[name]["read_cpu"] += d.read_cpu
                results[name]["hash_cpu"] += d.hash_cpu
                pending[nar_file] = len(comp)
            if not comp:
                os.unlink(nar_file)
            for c in comp:
                futs.append(pool.submit(do_compress, name, e, c, nar_file))
            # keep at most a few NARs in /dev/shm at once
            while sum(1 for f in futs if not f.done()) > 2 * cores + 2:
                concurrent.futures.wait(futs, return_when=concurrent.futures.FIRST_COMPLETED)
        for f in futs:
            f.result()
    if errors:
        raise RuntimeError("limit: " + "; ".join(errors[:5]))
    for name, r in results.items():
        r["limit_none"] = (r["read_cpu"] + r["hash_cpu"]) / cores
        for c in comp:
            r[f"limit_{c}"] = (r["read_cpu"] + r["hash_cpu"] + r[f"{c}_cpu"] + r[f"{c}_hash_cpu"]) / cores
        r["cores"] = cores
    log(f"limit measured in {time.time() - t0:.0f} s wall")
    return results


class FileWrites:
    """The cost of writing a cache's files, uncompressed, without reading or hashing anything:
    one NAR file and one narinfo per path, each created, written and closed in a new directory.

    The NARs and narinfo texts are made once, here (not timed). Each `measure` then writes them all
    from one thread, into a new directory, and records that thread's CPU time (user+sys, thread
    clock) and the wall time. The limit is that CPU time, not divided by the cores: creating
    entries in one directory takes the directory's lock, so a second thread would mostly wait.

    The cost of creating files swings several-fold with the state of the file system (ext4 checks
    new inodes against those freed in the last 30 s), so the benchmark measures it between the
    methods' runs, round after round, and takes the median.
    """

    def __init__(self, closure):
        import io
        self.files = []
        for e in closure:
            buf = io.BytesIO()
            nar_hash = NarDump(buf).dump(e["path"])
            nar = buf.getvalue()
            name = os.path.basename(e["path"]).split("-", 1)[0]
            refs = " ".join(os.path.basename(r) for r in e["references"])
            info = (f"StorePath: {e['path']}\nURL: nar/{name}.nar\nCompression: none\n"
                    f"FileHash: {nar_hash}\nFileSize: {len(nar)}\nNarHash: {nar_hash}\n"
                    f"NarSize: {len(nar)}\nReferences: {refs}\n")
            self.files.append((os.path.join("nar", name + ".nar"), nar))
            self.files.append((name + ".narinfo", info.encode()))
        self.bytes = sum(len(d) for _, d in self.files)
        self.tries = []

    def measure(self, out_dir, log=print):
        """Writes every file into the new directory `out_dir`; returns (CPU s, wall s)."""
        os.makedirs(os.path.join(out_dir, "nar"))
        os.sync()
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
        t0, c0 = time.perf_counter(), time.thread_time()
        for rel, data in self.files:
            fd = os.open(os.path.join(out_dir, rel), flags, 0o644)
            os.write(fd, data)
            os.close(fd)
        cpu, wall = time.thread_time() - c0, time.perf_counter() - t0
        log(f"writing {len(self.files)} files ({self.bytes / (1 << 20):.1f} MiB): "
            f"{wall:.2f} s wall, {cpu:.2f} s CPU")
        self.tries.append((cpu, wall))
        return cpu, wall

    def result(self, cores):
        """{"files", "bytes", "write_cpu", "write_wall", "limit_write" = write_cpu, "write_cpus"}:
        the median measurement, and every measurement's CPU time."""
        cpu, wall = sorted(self.tries)[len(self.tries) // 2]
        return {"files": len(self.files), "bytes": self.bytes, "write_cpu": cpu, "write_wall": wall,
                "limit_write": cpu, "write_cpus": [c for c, _ in self.tries], "cores": cores}
