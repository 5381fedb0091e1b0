#!/usr/bin/env python3
"""scripts/bench - the benchmark behind BENCHMARKS.md (see scripts/bench).

One run: make a seeded synthetic corpus; save it as a checkpoint with ckptfs
itself (mkdir in snapshots/) and with zip -r; mount that same archive with
ckptfs, fuse-zip and archivemount, a squashfs image of its extracted tree
with squashfuse, and read the extracted tree on the local disk; measure
each the same way; write a markdown report.

Every measurement is repeated (median, min-max spread), runs with
/dev/cpu_dma_latency held at 0 us, and is bounded by a timeout.  Every
mount and every process this script starts is ended by it, whatever way it
ends; nothing it did not start is touched.  Standard library only.
"""

import argparse
import atexit
import datetime
import json
import math
import os
import platform
import random
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import zipfile

SYSTEMS = ["local", "ckptfs", "fuse-zip", "archivemount", "squashfuse"]
SQUASHFUSE = "squashfuse_ll"
PEERS = ["fuse-zip", "archivemount", "squashfuse"]
MB = 1e6


def log(msg):
    print("bench: %s %s" % (time.strftime("%H:%M:%S"), msg),
          file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


class Timeout(BenchError):
    pass


# ---- processes and mounts we own -------------------------------------------

_MOUNTS = []  # Mount objects currently mounted
_PIDS = []  # Popen objects we started and have not reaped
_CLEANUP = []  # callables run at exit, last first


def _cleanup():
    for m in list(_MOUNTS):
        try:
            m.stop()
        except Exception as e:  # keep cleaning
            log("cleanup: %s: %s" % (m.mnt, e))
    for p in list(_PIDS):
        _end(p)
    while _CLEANUP:
        fn = _CLEANUP.pop()
        try:
            fn()
        except Exception as e:
            log("cleanup: %s" % e)


def _end(p, grace=5.0):
    """Ends one process we started: TERM, then KILL after grace."""
    if p.poll() is None:
        try:
            p.terminate()
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                log("PID %d survived SIGKILL" % p.pid)
    if p in _PIDS:
        _PIDS.remove(p)


def _on_signal(sig, frame):
    raise SystemExit(128 + sig)


atexit.register(_cleanup)
signal.signal(signal.SIGTERM, _on_signal)
signal.signal(signal.SIGINT, _on_signal)
signal.signal(signal.SIGHUP, _on_signal)


def run(argv, timeout, cwd=None, env=None, out=False):
    """Runs argv; returns stdout text when out, else None.  Bounded."""
    try:
        r = subprocess.run(argv, cwd=cwd, env=env, timeout=timeout,
                           stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE if out else subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    except subprocess.TimeoutExpired:
        raise Timeout("%s: timed out after %g s" % (argv[0], timeout))
    if r.returncode != 0:
        raise BenchError("%s exited %d: %s" % (
            " ".join(argv[:3]), r.returncode,
            r.stderr.decode(errors="replace").strip()[-300:]))
    return r.stdout.decode(errors="replace") if out else None


def timed(argv, timeout, cwd=None, env=None):
    t0 = time.perf_counter()
    run(argv, timeout, cwd=cwd, env=env)
    return time.perf_counter() - t0


def kv(text):
    d = {}
    for tok in text.split():
        if "=" in tok:
            k, v = tok.split("=", 1)
            d[k] = float(v)
    return d


class Mount:
    """One FUSE daemon run in the foreground by us, and its mount point."""

    def __init__(self, system, argv, mnt, env, logpath):
        self.system, self.argv, self.mnt = system, argv, mnt
        self.env, self.logpath, self.proc = env, logpath, None

    def start(self, timeout):
        """Starts the daemon; returns seconds until the mount answers."""
        os.makedirs(self.mnt, exist_ok=True)
        if os.path.ismount(self.mnt):
            raise BenchError("%s is mounted already" % self.mnt)
        logf = open(self.logpath, "ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(self.argv, env=self.env,
                                     stdin=subprocess.DEVNULL, stdout=logf,
                                     stderr=logf)
        logf.close()
        _PIDS.append(self.proc)
        _MOUNTS.append(self)
        deadline = t0 + timeout
        while True:
            # The mount answers once lstat() of the mount point reaches
            # the daemon (INIT and GETATTR done).
            if os.path.ismount(self.mnt):
                return time.perf_counter() - t0
            if self.proc.poll() is not None:
                self.stop()
                raise BenchError("%s exited %d before mounting (see %s)" % (
                    self.system, self.proc.returncode, self.logpath))
            if time.perf_counter() > deadline:
                self.stop()
                raise Timeout("%s did not mount within %g s" % (
                    self.system, timeout))
            time.sleep(0.0005)

    def rss(self):
        """(VmRSS, VmHWM) of the daemon in bytes."""
        vals = {}
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":", 1)
                    vals[k] = int(v.split()[0]) * 1024
        return vals.get("VmRSS", 0), vals.get("VmHWM", 0)

    def stop(self):
        if self.proc is None:
            return
        if os.path.ismount(self.mnt):
            for cmd in (["fusermount3", "-u", self.mnt],
                        ["fusermount", "-u", self.mnt],
                        ["umount", self.mnt],
                        ["umount", "-l", self.mnt]):
                if not shutil.which(cmd[0]):
                    continue
                try:
                    subprocess.run(cmd, timeout=20,
                                   stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
                except subprocess.TimeoutExpired:
                    pass
                if not os.path.ismount(self.mnt):
                    break
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        _end(self.proc)
        if self in _MOUNTS:
            _MOUNTS.remove(self)
        self.proc = None


# ---- the measuring context ---------------------------------------------------

class Stat:
    """The repetitions of one measurement on one system."""

    def __init__(self, unit, better, vals=None, note=None):
        self.unit, self.better = unit, better  # better: "lower" / "higher"
        self.vals = list(vals or [])
        self.note = note  # why there is no figure (timeout, error, n/a)

    def med(self):
        return statistics.median(self.vals) if self.vals else None


class Bench:
    def __init__(self, args):
        self.a = args
        self.quick = args.quick
        self.work = None
        self.res = {}  # (group, row) -> {system: Stat}
        self.rows = {}  # group -> [row, ...] in order
        self.notes = []
        self.skip = set()  # (system, family) no longer tried
        self.sys_deadline = {}  # system -> time after which it is not tried
        self.t_start = time.time()
        self.cold_ok = os.geteuid() == 0
        self.dma_fd = None
        self.load = []  # "phase 1-min-loadavg" when each phase began

    # -- results
    def put(self, group, row, system, unit, better, val=None, note=None):
        self.rows.setdefault(group, [])
        if row not in self.rows[group]:
            self.rows[group].append(row)
        cell = self.res.setdefault((group, row), {})
        st = cell.get(system)
        if st is None:
            st = cell[system] = Stat(unit, better)
        if val is not None:
            st.vals.append(val)
        if note and not st.note:
            st.note = note
        return st

    def get(self, group, row, system):
        return self.res.get((group, row), {}).get(system)

    def over_budget(self):
        return time.time() - self.t_start > self.a.budget

    def attempt(self, system, key, group, row, unit, better, fn,
                record=True, family=None, once_if_slow=True):
        """Runs fn() -> value (or None) once; records it (unless not
        record) or the failure.  A timeout or error stops further
        repetitions of (system, key) and of its family (e.g. the warm
        row of a cold one); a run slower than --slow is not repeated."""
        family = family or key
        if (system, key) in self.skip or (system, family) in self.skip:
            return None
        if self.over_budget():
            self.put(group, row, system, unit, better,
                     note="not run: time budget spent")
            return None
        if time.time() > self.sys_deadline.get(system, float("inf")):
            self.put(group, row, system, unit, better,
                     note="not run: %s's time budget spent" % system)
            return None
        t0 = time.time()
        try:
            v = fn()
        except Timeout as e:
            self.skip.add((system, family))
            self.put(group, row, system, unit, better,
                     note="timeout (> %g s)" % self.a.timeout)
            log("%s %s: %s" % (system, row, e))
            return None
        except (BenchError, OSError) as e:
            self.skip.add((system, family))
            self.put(group, row, system, unit, better, note="failed")
            self.notes.append("%s, %s: %s" % (system, row, e))
            log("%s %s: %s" % (system, row, e))
            return None
        if once_if_slow and time.time() - t0 > self.a.slow:
            self.skip.add((system, key))
        if v is not None and record:
            self.put(group, row, system, unit, better, v)
        return v

    # -- method
    def hold_dma_latency(self):
        try:
            self.dma_fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
            os.write(self.dma_fd, struct.pack("<i", 0))
            return True
        except OSError as e:
            log("cannot hold /dev/cpu_dma_latency: %s" % e)
            self.dma_fd = None
            return False

    def drop(self):
        """Drops the page, dentry and inode caches (cold rows)."""
        if not self.cold_ok:
            return
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")

    def tool(self, *args, timeout=None):
        return kv(run([self.benchtool] + [str(a) for a in args],
                      timeout or self.a.timeout, out=True))


# ---- the corpus ----------------------------------------------------------------

WORDS = ("static int const char return if else for while struct size_t "
         "unsigned buf len err path node entry count index value result "
         "options self def import function let await printf memcpy strlen "
         "malloc free NULL true false uint64_t archive reader scan finding "
         "rule line session user workspace tree leaf branch width height "
         "parse render layout widget handler event queue worker thread "
         "mutex lock batch chunk stream offset length table column row "
         "query schema record field begin end next prev head tail list "
         "map filter reduce sort merge split join format print debug trace "
         "assert check test case expect actual").split()
PUNCT = [" ", " ", " ", "(", ")", ", ", "; ", " = ", "->", ".", "_", " + ",
         " == ", " && ", "[", "]", " {\n", "}\n", ";\n", "\n\t", "\n\t\t",
         " /* ", " */", "\"", ": ", "\n", "# ", "// ", "0", "1", "42"]
DIRWORDS = ("src lib core util net io ui app api db model view ctl svc pkg "
            "mod ext gen doc test spec fixtures data assets proto kernel "
            "driver parser lexer eval vm gc rt sched mem fs http rpc cli "
            "web cmd tools bench").split()
EXTS = ["c", "h", "py", "js", "ts", "go", "rs", "md", "txt", "json", "toml",
        "sh", "java", "rb"]
MTIME = 1767225600  # 2026-01-01T00:00:00Z: a fixed mtime for the corpus


def text_pool(rng, size):
    out, n = [], 0
    while n < size:
        w = rng.choice(WORDS) + rng.choice(PUNCT)
        out.append(w)
        n += len(w)
    return "".join(out).encode()[:size]


def make_corpus(b, rundir):
    """Writes RUNDIR/{workspace,session,run.json}; returns its facts."""
    a = b.a
    rng = random.Random(a.seed)
    pool = text_pool(rng, 2 << 20 if not b.quick else 256 << 10)
    ws = os.path.join(rundir, "workspace")
    tree = os.path.join(ws, "tree")
    # ~ndirs nested directories: each one's parent is an earlier one.
    dirs = [""]
    for i in range(1, a.dirs):
        parent = dirs[rng.randrange(len(dirs))]
        name = "%s%d" % (rng.choice(DIRWORDS), i)
        dirs.append(parent + "/" + name if parent else name)
    for d in dirs:
        os.makedirs(os.path.join(tree, d), exist_ok=True)
    small, total = [], 0
    lo, hi = math.log(200), math.log(20 << 10)
    for j in range(a.files):
        d = dirs[rng.randrange(len(dirs))]
        name = "%s_%d.%s" % (rng.choice(WORDS).lower(), j, rng.choice(EXTS))
        size = int(math.exp(rng.uniform(lo, hi)))
        off = rng.randrange(len(pool) - size)
        rel = "workspace/tree/" + (d + "/" if d else "") + name
        with open(os.path.join(rundir, rel), "wb") as f:
            f.write(pool[off:off + size])
        os.utime(os.path.join(rundir, rel), (MTIME, MTIME))
        small.append(rel)
        total += size
    data = os.path.join(ws, "data")
    os.makedirs(data)
    big = a.big_mib << 20
    # Compressible: source-like text, pool pieces at random offsets.
    with open(os.path.join(data, "corpus.txt"), "wb") as f:
        n = 0
        while n < big:
            k = min(64 << 10, big - n)
            off = rng.randrange(len(pool) - k)
            f.write(pool[off:off + k])
            n += k
    # Incompressible: seeded random bytes behind a zstd frame magic, as a
    # compressed file would be (ckptfs stores such files as is).
    with open(os.path.join(data, "blob.zst"), "wb") as f:
        f.write(b"\x28\xb5\x2f\xfd")
        n = 4
        while n < big:
            k = min(16 << 20, big - n)
            f.write(rng.randbytes(k))
            n += k
    # The transcript: JSONL of user/assistant turns, in the session tier.
    proj = os.path.join(rundir, "session", "projects", "-work-bench")
    os.makedirs(proj)
    tsize = a.transcript_mib << 20
    with open(os.path.join(proj, "transcript.jsonl"), "wb") as f:
        n, i = 0, 0
        while n < tsize:
            k = rng.randrange(200, 4000)
            off = rng.randrange(len(pool) - k)
            line = json.dumps({
                "type": "user" if i % 2 == 0 else "assistant", "turn": i,
                "message": {"role": "user" if i % 2 == 0 else "assistant",
                            "content": pool[off:off + k].decode()}},
                separators=(",", ":")).encode() + b"\n"
            f.write(line)
            n += len(line)
            i += 1
    for rel in ("workspace/data/corpus.txt", "workspace/data/blob.zst",
                "session/projects/-work-bench/transcript.jsonl"):
        os.utime(os.path.join(rundir, rel), (MTIME, MTIME))
    with open(os.path.join(rundir, "run.json"), "w") as f:
        json.dump({"id": "bench", "backend": "claude-code-v1"}, f)
    big_rel = {"text": "workspace/data/corpus.txt",
               "blob": "workspace/data/blob.zst",
               "jsonl": "session/projects/-work-bench/transcript.jsonl"}
    allbytes = total + 2 * big + os.path.getsize(
        os.path.join(rundir, big_rel["jsonl"]))
    return {"small": small, "small_bytes": total, "dirs": len(dirs),
            "big": big_rel, "bytes": allbytes, "pool": pool}


def make_store(b, storedir, localdir, n):
    """n small checkpoints with mkckpt, and their extracted twins."""
    rng = random.Random(b.a.seed + 1)
    src = os.path.join(b.work, "store-run")
    ws = os.path.join(src, "workspace")
    for d in ("a", "b/c", "d"):
        os.makedirs(os.path.join(ws, d), exist_ok=True)
    os.makedirs(storedir)
    os.makedirs(localdir)
    first = "workspace/a/first.txt"
    for i in range(n):
        name = "ck%04d" % i
        files = {first: "checkpoint %d\n" % i,
                 "workspace/a/notes.md": "# notes %d\n" % rng.random(),
                 "workspace/b/c/main.py": "print(%d)\n" % i * 20,
                 "workspace/d/data.json": json.dumps(
                     {"i": i, "v": [rng.randrange(1000) for _ in range(50)]})}
        for rel, text in files.items():
            with open(os.path.join(src, rel), "w") as f:
                f.write(text)
        out = os.path.join(storedir, name + ".ckpt")
        run([b.mkckpt, "-n", name, "-c",
             str((MTIME + i) * 1000000000), src, out], b.a.timeout)
        with zipfile.ZipFile(out) as z:
            z.extractall(os.path.join(localdir, name))
    return first


# ---- the measurements ------------------------------------------------------------

class Target:
    """Where one system shows the checkpoint's root (workspace/, session/)."""

    def __init__(self, system, root, mount=None):
        self.system, self.root, self.mount = system, root, mount


def measure_tree(b, t, facts, lists):
    """Every tree measurement on one mounted (or local) target."""
    s, a, T = t.system, b.a, b.a.timeout
    reps = a.reps
    G1, G2, G3, G4, G5 = ("walk", "small files", "large files",
                          "random reads", "concurrency")

    def walk(argv):
        return lambda: timed(argv, T)

    # One untimed walk first: every daemon has seen the tree once (the
    # first walk after a fresh mount is measured in the mount group).
    b.attempt(s, "warmup", "walk", "warm-up walk", "s", "lower",
              lambda: (timed(["find", t.root], T), None)[1])
    for name, argv in (("find", ["find", t.root]),
                       ("ls -lR", ["ls", "-lR", t.root])):
        for r in range(reps):
            b.drop()
            b.attempt(s, name + "c", G1, name + " cold", "s", "lower",
                      walk(argv), family=name)
            b.attempt(s, name + "w", G1, name + " warm", "s", "lower",
                      walk(argv), family=name)
    if t.mount:
        rss, _ = t.mount.rss()
        b.put("mount", "daemon RSS after the walks", s, "B", "lower", rss)

    def readall(lst):
        def f():
            d = b.tool("readlist", t.root, lst)
            if d["files"] != len(facts["small"]):
                raise BenchError("read %d files" % d["files"])
            return d["seconds"]
        return f
    for r in range(reps):
        b.drop()
        b.attempt(s, "smallc", G2, "read every small file, cold", "s",
                  "lower", readall(lists["small"]), family="small")
        b.attempt(s, "smallw", G2, "read every small file, warm", "s",
                  "lower", readall(lists["small"]), family="small")
    if t.mount:
        rss, _ = t.mount.rss()
        b.put("mount", "daemon RSS after reading every file", s, "B",
              "lower", rss)

    labels = {"text": "%d MiB compressible text (deflated)" % a.big_mib,
              "blob": "%d MiB incompressible (stored)" % a.big_mib,
              "jsonl": "%d MiB JSONL transcript (deflated)"
                       % a.transcript_mib}
    for key in ("text", "blob", "jsonl"):
        path = os.path.join(t.root, facts["big"][key])

        def seq():
            d = b.tool("seq", path)
            return d["bytes"] / d["seconds"] / MB
        for r in range(reps):
            b.drop()
            b.attempt(s, key + "c", G3, labels[key] + ", cold", "MB/s",
                      "higher", seq, family=key)
            b.attempt(s, key + "w", G3, labels[key] + ", second pass",
                      "MB/s", "higher", seq, family=key)

    text = os.path.join(t.root, facts["big"]["text"])
    for r in range(reps):
        b.drop()
        d = b.attempt(s, "rand", G4,
                      "time to first byte (open + first pread), cold", "s",
                      "lower", lambda: b.tool("rand", text, a.rand, a.seed,
                                              a.rand_limit),
                      record=False)
        if d and d["count"] < a.rand:
            b.put(G4, "preads done within %g s (of %d)" % (a.rand_limit,
                                                           a.rand),
                  s, "", "higher", d["count"])
        if d:
            b.put(G4, "time to first byte (open + first pread), cold", s,
                  "s", "lower", d["ttfb"])
            b.put(G4, "median pread", s, "s", "lower", d["median"])
            b.put(G4, "p99 pread", s, "s", "lower", d["p99"])
            b.put(G4, "mean pread", s, "s", "lower",
                  d["seconds"] / d["count"])

    for n in (1, 2, 4):
        def conc_small():
            d = b.tool("conclist", n, 4, t.root, lists["small"])
            return d["bytes"] / d["seconds"] / MB

        def conc_text():
            d = b.tool("concseq", n, 4, text)
            return d["bytes"] / d["seconds"] / MB
        for r in range(reps):
            b.drop()
            b.attempt(s, "cs%d" % n, G5,
                      "small files cold, %d reader%s (each a quarter)"
                      % (n, "s" if n > 1 else ""), "MB/s", "higher",
                      conc_small)
            b.drop()
            b.attempt(s, "ct%d" % n, G5,
                      "compressible file cold, %d reader%s (each a "
                      "quarter)" % (n, "s" if n > 1 else ""), "MB/s",
                      "higher", conc_text)
    if t.mount:
        _, hwm = t.mount.rss()
        b.put("mount", "daemon peak RSS (whole run)", s, "B", "lower", hwm)


def mounter(b, system, mnt, archive, image, store=None, source=None):
    env = dict(os.environ)
    lg = os.path.join(b.work, "log-%s.txt" % system)
    if system == "ckptfs":
        argv = [b.ckptfs, "-f", store, mnt]
        if source:
            argv += ["-o", "source=" + source]
        env.setdefault("CKPTFS_BACKENDS", os.path.join(b.a.srcdir,
                                                       "backends"))
    elif system == "fuse-zip":
        argv = ["fuse-zip", "-f", "-r", archive, mnt]
    elif system == "archivemount":
        argv = ["archivemount", "-f", "-o", "readonly", archive, mnt]
    elif system == "squashfuse":
        # squashfuse_ll, the low-level daemon of the same package: the
        # high-level squashfuse resolves every path from the root and was
        # 30-120x slower than the local disk on find and ls -lR here.
        argv = [SQUASHFUSE, "-f", image, mnt]
    else:
        raise ValueError(system)
    return Mount(system, argv, mnt, env, lg)


def measure_mounts(b, facts, lists, paths):
    """The mount group, then every tree measurement, system by system."""
    a = b.a
    for s in SYSTEMS:
        if s != "local" and not b.have[s]:
            for g, rows in list(b.rows.items()):
                for row in rows:
                    b.put(g, row, s, "", "lower", note="n/a (not installed)")
            continue
        if b.over_budget():
            log("time budget spent: %s not measured" % s)
            continue
        t0 = time.time()
        b.load.append("%s %s" % (s, loadavg()))
        b.sys_deadline[s] = t0 + a.sys_budget
        log("measuring %s" % s)
        if s == "local":
            b.put("mount", "mount time, cold", s, "s", "lower",
                  note="—")
            for r in range(a.reps):
                b.drop()
                b.attempt(s, "first", "mount", "first find after mount, cold",
                          "s", "lower",
                          lambda: timed(["find", paths["local"]], a.timeout))
            measure_tree(b, Target(s, paths["local"]), facts, lists)
            b.sys_deadline.pop(s, None)
            log("local: %.0f s" % (time.time() - t0))
            continue
        mnt = os.path.join(b.work, "mnt-" + s)
        root = os.path.join(mnt, "snapshots", "bench") if s == "ckptfs" \
            else mnt

        def mk():
            return mounter(b, s, mnt, paths["archive"], paths["image"],
                           store=paths["store"])
        for r in range(a.reps):
            b.drop()
            m = mk()

            def once():
                t = m.start(a.timeout)
                b.put("mount", "mount time, cold", s, "s", "lower", t)
                return timed(["find", root], a.timeout)
            try:
                b.attempt(s, "first", "mount", "first find after mount, cold",
                          "s", "lower", once)
            finally:
                m.stop()
        m = mk()
        try:
            m.start(a.timeout)
        except BenchError as e:
            b.notes.append("%s: cannot mount: %s" % (s, e))
            log("%s: cannot mount: %s" % (s, e))
            b.sys_deadline.pop(s, None)
            continue
        try:
            measure_tree(b, Target(s, root, m), facts, lists)
        finally:
            m.stop()
            b.sys_deadline.pop(s, None)
        log("%s: %.0f s" % (s, time.time() - t0))


def measure_store(b, paths, first, n):
    a, G = b.a, "store"
    row_mount = "mount time, cold"
    row_cold = "list + stat the first file of each, cold (first use)"
    row_warm = "list + stat the first file of each, warm"

    def liststat(d):
        def f():
            r = b.tool("storestat", d, first)
            if r["entries"] != n or r["stat_ok"] != n:
                raise BenchError("saw %d entries, stat ok %d" % (
                    r["entries"], r["stat_ok"]))
            return r["seconds"]
        return f
    log("measuring the %d-checkpoint store" % n)
    b.put(G, row_mount, "local", "s", "lower", note="—")
    for r in range(a.reps):
        b.drop()
        b.attempt("local", "sc", G, row_cold, "s", "lower",
                  liststat(paths["store_local"]))
        b.attempt("local", "sw", G, row_warm, "s", "lower",
                  liststat(paths["store_local"]))
    for s in ("ckptfs", "squashfuse"):
        if not b.have[s]:
            for row in (row_mount, row_cold, row_warm):
                b.put(G, row, s, "", "lower", note="n/a (not installed)")
            continue
        mnt = os.path.join(b.work, "mnt-store-" + s)
        d = os.path.join(mnt, "snapshots") if s == "ckptfs" else mnt
        for r in range(a.reps):
            b.drop()
            m = mounter(b, s, mnt, None, paths["store_image"],
                        store=paths["store_ckpt"])
            try:
                b.attempt(s, "sm", G, row_mount, "s", "lower",
                          lambda: m.start(a.timeout))
                if m.proc is None:
                    continue
                b.attempt(s, "sc", G, row_cold, "s", "lower", liststat(d))
                for w in range(a.reps):
                    b.attempt(s, "sw", G, row_warm, "s", "lower",
                              liststat(d))
                if r == 0:
                    rss, _ = m.rss()
                    b.put(G, "daemon RSS after listing", s, "B", "lower",
                          rss)
            finally:
                m.stop()
    # fuse-zip and archivemount have no store: one mount per archive.
    names = sorted(os.listdir(paths["store_ckpt"]))[:a.per_archive]
    unit = "per archive: mount + stat the first file + unmount, cold"
    for s in ("fuse-zip", "archivemount"):
        if not b.have[s]:
            b.put(G, unit, s, "", "lower", note="n/a (not installed)")
            continue
        b.drop()
        for nm in names:
            mnt = os.path.join(b.work, "mnt-one-" + s)
            m = mounter(b, s, mnt, os.path.join(paths["store_ckpt"], nm),
                        None)

            def one():
                t0 = time.perf_counter()
                m.start(a.timeout)
                os.stat(os.path.join(mnt, first))
                m.stop()
                return time.perf_counter() - t0
            try:
                b.attempt(s, "one", G, unit, "s", "lower", one)
            finally:
                m.stop()
    b.put(G, unit, "local", "s", "lower", note="—")
    b.notes.append(
        "Store: fuse-zip and archivemount mount one archive at a time, so "
        "their unit is one mount of one small checkpoint (median of %d, "
        "each mount, stat, unmount); %d such mounts would take about %d "
        "times as long.  squashfuse mounts one squashfs image of the %d "
        "extracted checkpoints; the local column is those %d directories."
        % (len(names), n, n, n, n))


def measure_save(b, facts, rundir, paths):
    a, G = b.a, "save"
    T = a.save_timeout
    savestore = paths["save_store"]
    mnt = os.path.join(b.work, "mnt-save")
    snap = os.path.join(mnt, "snapshots")
    nbytes = facts["bytes"]
    # The source is read warm by every contender: prime it once.
    allfiles = os.path.join(b.work, "all-files.txt")
    with open(allfiles, "w") as f:
        for dp, dn, fn in os.walk(rundir):
            for x in fn:
                f.write(os.path.relpath(os.path.join(dp, x), rundir) + "\n")
    b.tool("readlist", rundir, allfiles, timeout=T)
    m = mounter(b, "ckptfs", mnt, None, None, store=savestore,
                source=rundir)
    m.start(a.timeout)

    def status(name):
        with open(os.path.join(mnt, ".ckptfs", "status")) as f:
            for line in f:
                o = json.loads(line)
                if o.get("save") == name:
                    return o
        return {}
    try:
        log("saving with ckptfs (%d MB)" % (nbytes / MB))
        for r in range(a.reps):
            if os.path.isdir(os.path.join(snap, "bench")):
                os.rmdir(os.path.join(snap, "bench"))

            def save():
                t0 = time.perf_counter()
                os.mkdir(os.path.join(snap, "bench"))
                return time.perf_counter() - t0
            t = b.attempt("ckptfs", "save", G, "full save: seconds", "s",
                          "lower", save, once_if_slow=False)
            if t:
                b.put(G, "full save: MB/s of input", "ckptfs", "MB/s",
                      "higher", nbytes / t / MB)
                st = status("bench")
                if st.get("result") != "ok" or st.get("files_copied", 0):
                    b.notes.append("full save %d: status %s" % (r + 1, st))
        archive = os.path.join(savestore, "bench.ckpt")
        if not os.path.exists(archive):
            raise BenchError("ckptfs did not save bench.ckpt")
        shutil.copyfile(archive, paths["archive"])
        b.put(G, "archive size", "ckptfs", "B", "lower",
              os.path.getsize(archive))
        # zip -r at ckptfs's level (6) and at 1, fsync'ed as ckptfs does.
        for lvl in (6, 1):
            out = os.path.join(b.work, "zip%d.zip" % lvl)
            for r in range(a.reps):
                if os.path.exists(out):
                    os.unlink(out)

                def z():
                    t0 = time.perf_counter()
                    run(["zip", "-q", "-r", "-%d" % lvl, out, "workspace",
                         "session"], T, cwd=rundir)
                    fd = os.open(out, os.O_RDONLY)
                    os.fsync(fd)
                    os.close(fd)
                    return time.perf_counter() - t0
                if not b.have["zip"]:
                    break
                t = b.attempt("zip -r -%d" % lvl, "zip%d" % lvl, G,
                              "full save: seconds", "s", "lower", z,
                              once_if_slow=False)
                if t:
                    b.put(G, "full save: MB/s of input", "zip -r -%d" % lvl,
                          "MB/s", "higher", nbytes / t / MB)
            if os.path.exists(out):
                b.put(G, "archive size", "zip -r -%d" % lvl, "B", "lower",
                      os.path.getsize(out))
                os.unlink(out)
        # Incremental: change 10 small files, save again.
        rng = random.Random(a.seed + 2)
        for r in range(a.reps):
            for rel in rng.sample(facts["small"], 10):
                p = os.path.join(rundir, rel)
                with open(p, "ab") as f:
                    f.write(b"\n// changed in incremental round %d\n" % r)
            name = "bench-inc%d" % (r + 1)

            def inc():
                t0 = time.perf_counter()
                os.mkdir(os.path.join(snap, name))
                return time.perf_counter() - t0
            t = b.attempt("ckptfs", "inc", G,
                          "incremental save after changing 10 files: "
                          "seconds", "s", "lower", inc, once_if_slow=False)
            full = med(b, G, "full save: seconds", "ckptfs")
            if t and full:
                b.put(G, "incremental save: % of the full save's time",
                      "ckptfs", "%", "lower", 100 * t / full)
            if t:
                st = status(name)
                b.put(G, "incremental save: files copied from the parent",
                      "ckptfs", "", "higher", st.get("files_copied", 0))
                b.put(G, "incremental save: files in the checkpoint",
                      "ckptfs", "", "higher", st.get("files_total", 0))
    finally:
        m.stop()


def measure_scan(b):
    if not b.check_scan:
        b.put("save", "secret scan alone (check_scan throughput), MB/s",
              "ckptfs", "MB/s", "higher", note="n/a (no check_scan)")
        return
    env = dict(os.environ, CK_RUN_CASE="throughput", CK_VERBOSITY="normal")

    def scan():
        out = run([b.check_scan], b.a.timeout, env=env, out=True)
        for line in out.splitlines():
            if "throughput" in line and "MB/s" in line:
                w = line.split()
                return float(w[w.index("MB/s") - 1])
        raise BenchError("no throughput line in check_scan output")
    for r in range(b.a.reps):
        b.attempt("ckptfs", "scan", "save",
                  "secret scan alone (check_scan throughput), MB/s",
                  "MB/s", "higher", scan)


# ---- the report -------------------------------------------------------------------

def fmt(v, unit):
    if v is None:
        return "—"
    if unit == "s":
        if v < 1e-3:
            return "%.0f µs" % (v * 1e6)
        if v < 1:
            return "%.3g ms" % (v * 1e3)
        return "%.3g s" % v
    if unit == "MB/s":
        return "%.0f MB/s" % v if v < 10000 else "%.1f GB/s" % (v / 1e3)
    if unit == "B":
        if v >= 1 << 30:
            return "%.2f GiB" % (v / (1 << 30))
        return "%.1f MiB" % (v / (1 << 20))
    if unit == "%":
        return "%.1f%%" % v
    return "%g" % v


REPS = 1


def cell(st, ref):
    if st is None:
        return "—"
    if not st.vals:
        return st.note or "—"
    med = st.med()
    text = fmt(med, st.unit)
    if len(st.vals) > 1:
        lo, hi = min(st.vals), max(st.vals)
        text += " (%s–%s)" % (fmt(lo, st.unit), fmt(hi, st.unit))
    elif REPS > 1 and st.unit in ("s", "MB/s"):
        text += " (1 run)"
    if ref is not None and ref.vals and ref is not st and ref.med():
        text += " **%.2f×**" % (med / ref.med())
    return text


GROUP_TITLES = {
    "mount": "Mounting the checkpoint of the whole corpus",
    "walk": "Walking the tree (find, ls -lR)",
    "small files": "Reading every small file",
    "large files": "Sequential reads of the large files",
    "random reads": "Random 4 KiB preads in the compressible large file",
    "concurrency": "Concurrent readers (aggregate throughput)",
    "store": "The store of small checkpoints",
    "save": "Saving",
}


def table(b, group, cols, ref_col="local"):
    lines = ["| measurement | " + " | ".join(cols) + " |",
             "|---|" + "---|" * len(cols)]
    for row in b.rows.get(group, []):
        cells = b.res.get((group, row), {})
        ref = cells.get(ref_col) if ref_col else None
        better = next((c.better for c in cells.values() if c.vals), "lower")
        label = row + (" ↓" if better == "lower" else " ↑")
        lines.append("| %s | %s |" % (label, " | ".join(
            cell(cells.get(c), ref) for c in cols)))
    return "\n".join(lines)


def med(b, group, row, system):
    st = b.get(group, row, system)
    return st.med() if st and st.vals else None


def targets(b):
    """(target, ckptfs figure, met, best peer) rows."""
    a = b.a
    out = []

    def ratio(group, row, system):
        x, l = med(b, group, row, system), med(b, group, row, "local")
        return x / l if x is not None and l else None

    def best_peer(group, row, use_ratio, better):
        best = None
        for p in PEERS:
            v = ratio(group, row, p) if use_ratio else med(b, group, row, p)
            if v is None:
                continue
            if best is None or (v < best[1] if better == "lower"
                                else v > best[1]):
                best = (p, v)
        return best

    def add(label, group, row, op, limit, use_ratio=True, unit=None,
            value=None, peer=None):
        better = "lower" if op == "≤" else "higher"
        v = value if value is not None else (
            ratio(group, row, "ckptfs") if use_ratio
            else med(b, group, row, "ckptfs"))

        def show(x):
            if x is None:
                return "—"
            return "%.2f×" % x if use_ratio or unit is None else fmt(x, unit)
        if v is None:
            met = "not measured"
        else:
            met = "met" if (v <= limit if op == "≤" else v >= limit) \
                else "**missed**"
        if peer is None and group:
            peer = best_peer(group, row, use_ratio, better)
        out.append((label, show(v), met,
                    "%s %s" % (peer[0], show(peer[1])) if peer else "—"))

    add("warm find ≤ 1.5× local", "walk", "find warm", "≤", 1.5)
    add("warm ls -lR ≤ 1.0× local", "walk", "ls -lR warm", "≤", 1.0)
    add("cold find ≤ 0.7× local", "walk", "find cold", "≤", 0.7)
    add("cold ls -lR ≤ 0.9× local", "walk", "ls -lR cold", "≤", 0.9)
    add("small files cold ≤ 0.7× local", "small files",
        "read every small file, cold", "≤", 0.7)
    add("small files warm ≤ 1.5× local", "small files",
        "read every small file, warm", "≤", 1.5)
    t = "%d MiB compressible text (deflated)" % a.big_mib
    add("sequential deflated file cold ≥ 350 MB/s", "large files",
        t + ", cold", "≥", 350, use_ratio=False, unit="MB/s")
    add("sequential deflated file second pass ≥ 8 GB/s", "large files",
        t + ", second pass", "≥", 8000, use_ratio=False, unit="MB/s")
    add("stored entry cold ≥ 0.9× local", "large files",
        "%d MiB incompressible (stored)" % a.big_mib + ", cold", "≥", 0.9)
    g = "random reads"
    add("random 4 KiB: first byte ≤ 10 ms", g,
        "time to first byte (open + first pread), cold", "≤", 0.010,
        use_ratio=False, unit="s")
    add("random 4 KiB: median ≤ 2× local", g, "median pread", "≤", 2.0)
    add("random 4 KiB: p99 ≤ 2 ms", g, "p99 pread", "≤", 0.002,
        use_ratio=False, unit="s")
    add("daemon RSS ≤ 6 MiB after walking the checkpoint", "mount",
        "daemon RSS after the walks", "≤", 6 << 20, use_ratio=False,
        unit="B")
    add("%d-checkpoint store mounts ≤ 50 ms" % a.store, "store",
        "mount time, cold", "≤", 0.050, use_ratio=False, unit="s")
    add("store list + stat ≤ 0.7× local cold", "store",
        "list + stat the first file of each, cold (first use)", "≤", 0.7)
    add("store list + stat ≤ 1.5× local warm", "store",
        "list + stat the first file of each, warm", "≤", 1.5)
    for what, key in (("small files", "small files cold"),
                      ("compressible file", "compressible file cold")):
        r1 = "%s, 1 reader (each a quarter)" % key
        r4 = "%s, 4 readers (each a quarter)" % key

        def scale(s):
            x, y = med(b, "concurrency", r4, s), med(b, "concurrency", r1, s)
            return x / y if x and y else None
        peer = None
        for p in PEERS:
            v = scale(p)
            if v is not None and (peer is None or v > peer[1]):
                peer = (p, v)
        add("4 concurrent readers ≥ 1.7× one (%s)" % what, None, None, "≥",
            1.7, value=scale("ckptfs"), peer=peer)
    sv = med(b, "save", "full save: seconds", "ckptfs")
    z6 = med(b, "save", "full save: seconds", "zip -r -6")
    z1 = med(b, "save", "full save: seconds", "zip -r -1")
    add("save ≥ 1.7× zip -r at the same level (6)", None, None, "≥", 1.7,
        value=z6 / sv if sv and z6 else None,
        peer=("zip -r -1 vs -6", z6 / z1) if z1 and z6 else None)
    sc = med(b, "save", "secret scan alone (check_scan throughput), MB/s",
             "ckptfs")
    add("secret scan ≥ 1 GB/s per core", None, None, "≥", 1000,
        use_ratio=False, unit="MB/s", value=sc)
    inc = med(b, "save", "incremental save after changing 10 files: seconds",
              "ckptfs")
    out.append(("incremental save ≤ 5% of a full save",
                "%.1f%%" % (100 * inc / sv) if inc and sv else "—",
                ("met" if inc / sv <= 0.05 else "**missed**")
                if inc and sv else "not measured", "—"))
    return out


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            mem = "%.0f GiB" % (int(f.readline().split()[1]) / (1 << 20))
    except OSError:
        pass
    return "%d cores (nproc), %s, %s RAM, Linux %s" % (
        os.cpu_count() or 0, cpu, mem, platform.release())


def versions(b):
    out = []
    try:
        out.append(run([b.ckptfs, "-V"], 10, out=True)
                   .splitlines()[0].strip())
    except (BenchError, IndexError, OSError):
        pass
    for p in ("fuse-zip", "archivemount", "squashfuse", "zip",
              "squashfs-tools"):
        try:
            v = run(["dpkg-query", "-W", "-f=${Version}", p], 10, out=True)
            out.append("%s %s" % (p, v))
        except (BenchError, OSError):
            pass
    return ", ".join(out)


def describe_build(binary, srcdir):
    st = os.stat(binary)
    when = datetime.datetime.fromtimestamp(
        st.st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return "%s built %s, tree at commit %s" % (binary, when,
                                               git_rev(srcdir))


def git_rev(srcdir):
    try:
        rev = run(["git", "-C", srcdir, "rev-parse", "--short", "HEAD"], 10,
                  out=True).strip()
        dirty = run(["git", "-C", srcdir, "status", "--porcelain",
                     "--untracked-files=no"], 10, out=True).strip()
        return rev + (" with uncommitted changes" if dirty else "")
    except (BenchError, OSError):
        return "unknown (not a git checkout)"


def report(b, facts, cmdline, elapsed, fstype):
    a = b.a
    now = datetime.datetime.now(datetime.timezone.utc)
    L = []
    L.append("# ckptfs benchmarks")
    L.append("")
    if b.quick:
        L.append("**Quick run (tiny corpus, one repetition): proves the "
                 "script works; its figures mean nothing.**")
        L.append("")
    L.append("- Date: %s" % now.strftime("%Y-%m-%d %H:%M UTC"))
    L.append("- Machine: %s; work directory on %s" % (machine(), fstype))
    L.append("- Build: %s (copied at the start of the run)" % b.build)
    L.append("- Versions: %s" % versions(b))
    L.append("- Command: `%s` (%.1f minutes)" % (cmdline, elapsed / 60))
    L.append("")
    L.append("## Method")
    L.append("")
    L.append(
        "- Corpus (seed %d, deterministic): %d source-like files of "
        "200 B–20 KiB (log-uniform, %.0f MB in all) in %d nested "
        "directories; a %d MiB compressible text file; a %d MiB "
        "incompressible file (random bytes behind a zstd magic, so a save "
        "stores it); a %d MiB JSONL transcript in the session tier "
        "(backend claude-code-v1).  %.0f MB of input in all."
        % (a.seed, a.files, facts["small_bytes"] / MB, facts["dirs"],
           a.big_mib, a.big_mib, a.transcript_mib, facts["bytes"] / MB))
    L.append(
        "- ckptfs saves it itself: `ckptfs -f STORE MNT -o source=RUNDIR` "
        "and `mkdir MNT/snapshots/bench`.  fuse-zip (`-r`) and "
        "archivemount (`-o readonly`) mount that same `bench.ckpt`; "
        "squashfuse (its low-level daemon `squashfuse_ll`, which the "
        "package ships beside `squashfuse`) mounts `mksquashfs` (gzip, "
        "defaults) of the tree `unzip` extracts from it; **local** is that extracted tree on "
        "the local disk, and every ratio (**bold ×**) is against it.  "
        "Each daemon runs in the foreground with its default options.")
    L.append(
        "- During every measurement, for every column alike, "
        "`/dev/cpu_dma_latency` is held open with a 0 µs request "
        "(a 4-byte write of 0, kept open)%s."
        % ("" if b.dma_fd is not None else
           " — **this run could not open it**"))
    L.append(
        "- Cold rows: `echo 3 > /proc/sys/vm/drop_caches` (page cache, "
        "dentries, inodes) right before the measurement, on a mount whose "
        "daemon has walked the tree once; the very first use after a fresh "
        "mount is the mount group's \"first find\" row.  Warm rows "
        "repeat the measurement right after the cold one.%s"
        % ("" if b.cold_ok else
           "  **Not root: caches were not dropped, cold rows are warm.**"))
    L.append(
        "- Every figure is the median of %d runs with the min–max spread in "
        "brackets; ↓ lower is better, ↑ higher is better.  Every command "
        "is bounded (%g s for reads, %g s for saves); a timed-out "
        "measurement is not repeated, nor its warm twin, and one that took "
        "over %g s is run once (marked \"1 run\"); a system's tree "
        "measurements stop after %g s (\"time budget spent\").  Walks: `find ROOT` and `ls -lR ROOT` "
        "to /dev/null.  Reads: a small C tool (scripts/bench-lib/"
        "benchtool.c, built at run time) with 1 MiB reads; random reads "
        "are %d preads of 4 KiB at seeded 4 KiB-aligned offsets, stopped "
        "after %g s; its clock excludes process start-up.  Concurrent readers are processes, "
        "each reading its own quarter (of the small files, or of the "
        "compressible file's bytes)."
        % (a.reps, a.timeout, a.save_timeout, a.slow, a.sys_budget,
           a.rand, a.rand_limit))
    L.append(
        "- Saves read a warm source (read once beforehand); `zip -r` times "
        "include an fsync of the archive, as a ckptfs save is durable when "
        "mkdir returns.  zip deflates everything it is given, the "
        "incompressible file too.")
    L.append(
        "- Other processes may have run on the machine at the same time; "
        "the spreads show how much that mattered.  Load average (1 min) "
        "when each phase began: %s." % ", ".join(b.load))
    L.append("")
    for g in ("mount", "walk", "small files", "large files", "random reads",
              "concurrency", "store"):
        if g not in b.rows:
            continue
        L.append("## " + GROUP_TITLES[g])
        L.append("")
        if g == "store":
            L.append("%d checkpoints of 4 small files each, made with "
                     "tests/mkckpt." % a.store)
            L.append("")
        L.append(table(b, g, SYSTEMS))
        L.append("")
    if "save" in b.rows:
        L.append("## " + GROUP_TITLES["save"])
        L.append("")
        L.append("The whole corpus (%.0f MB) into one archive; the ratio is "
                 "against zip -r -6 (ckptfs deflates at level 6)."
                 % (facts["bytes"] / MB))
        L.append("")
        L.append(table(b, "save", ["ckptfs", "zip -r -6", "zip -r -1"],
                       ref_col="zip -r -6"))
        L.append("")
    L.append("## Targets")
    L.append("")
    L.append("| target | ckptfs | result | best peer |")
    L.append("|---|---|---|---|")
    for t in targets(b):
        L.append("| %s | %s | %s | %s |" % t)
    L.append("")
    if b.notes:
        L.append("## Notes")
        L.append("")
        for n in b.notes:
            L.append("- " + n)
        L.append("")
    return "\n".join(L)


# ---- main ------------------------------------------------------------------------

def find_bin(env, candidates):
    if os.environ.get(env):
        return os.environ[env]
    found = [c for c in candidates if os.access(c, os.X_OK)]
    return max(found, key=os.path.getmtime) if found else None


def main():
    p = argparse.ArgumentParser(prog="scripts/bench")
    p.add_argument("--srcdir", required=True)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out")
    p.add_argument("--no-install", action="store_true")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (for profiling)")
    p.add_argument("--seed", type=int, default=20261122)
    for name, full, quick in (("files", 20000, 300), ("dirs", 2000, 30),
                              ("big-mib", 256, 4),
                              ("transcript-mib", 64, 1),
                              ("store", 1000, 20), ("reps", 3, 1),
                              ("rand", 2000, 200), ("per-archive", 20, 3)):
        p.add_argument("--" + name, type=int, default=None,
                       help="default %d (--quick: %d)" % (full, quick))
        p.set_defaults(**{"_d_" + name.replace("-", "_"): (full, quick)})
    p.add_argument("--timeout", type=float, default=None)
    p.add_argument("--rand-limit", type=float, default=None,
                   help="seconds after which the random preads stop")
    p.add_argument("--save-timeout", type=float, default=None)
    p.add_argument("--budget", type=float, default=None,
                   help="seconds after which measurements are skipped")
    p.add_argument("--sys-budget", type=float, default=None,
                   help="seconds one system's tree measurements may take")
    p.add_argument("--slow", type=float, default=None,
                   help="a run longer than this is not repeated")
    a = p.parse_args()
    for k in list(vars(a)):
        if k.startswith("_d_"):
            name = k[3:]
            if getattr(a, name) is None:
                full, quick = getattr(a, k)
                setattr(a, name, quick if a.quick else full)
    a.timeout = a.timeout or (30 if a.quick else 90)
    a.save_timeout = a.save_timeout or (30 if a.quick else 300)
    a.budget = a.budget or (50 if a.quick else 40 * 60)
    a.srcdir = os.path.abspath(a.srcdir)
    a.slow = a.slow or (10 if a.quick else 25)
    a.sys_budget = a.sys_budget or (20 if a.quick else 240)
    a.rand_limit = a.rand_limit or (10 if a.quick else 45)
    global REPS
    REPS = a.reps
    cmdline = "scripts/bench" + "".join(
        " " + x for x in sys.argv[1:] if not x.startswith("--srcdir")
        and x != a.srcdir)

    b = Bench(a)
    top = a.srcdir
    b.ckptfs = find_bin("CKPTFS", [top + "/build/fs/ckptfs",
                                   top + "/fs/ckptfs"])
    b.mkckpt = find_bin("MKCKPT", [top + "/build/tests/mkckpt",
                                   top + "/tests/mkckpt"])
    cands = [top + "/build/tests/unit/check_scan",
             top + "/tests/unit/check_scan"]
    if b.mkckpt:
        cands.insert(0, os.path.join(os.path.dirname(b.mkckpt), "unit",
                                     "check_scan"))
    b.check_scan = find_bin("CHECK_SCAN", cands)
    if not b.ckptfs or not b.mkckpt:
        log("build first: no ckptfs or mkckpt (set CKPTFS, MKCKPT)")
        return 1
    if not os.path.exists("/dev/fuse") or not shutil.which("fusermount3"):
        log("SKIP: no /dev/fuse or fusermount3: nothing can be mounted")
        return 77
    if not b.cold_ok:
        if not a.quick:
            log("the full run needs root (drop_caches, cpu_dma_latency)")
            return 77
        log("not root: cold rows will not be cold")
    b.have = {"ckptfs": True,
              "fuse-zip": bool(shutil.which("fuse-zip")),
              "archivemount": bool(shutil.which("archivemount")),
              "squashfuse": bool(shutil.which(SQUASHFUSE)
                                 and shutil.which("mksquashfs")),
              "zip": bool(shutil.which("zip"))}
    cc = shutil.which("cc") or shutil.which("gcc")
    if not cc or not shutil.which("unzip"):
        log("SKIP: a C compiler and unzip are needed")
        return 77

    base = os.environ.get("TMPDIR") or "/var/tmp"
    if not os.path.isdir(base):
        base = tempfile.gettempdir()
    b.work = tempfile.mkdtemp(prefix="ckptfs-bench.", dir=base)
    if not a.keep:
        _CLEANUP.append(lambda: shutil.rmtree(b.work, ignore_errors=True))
    else:
        log("keeping %s" % b.work)
    fstype = run(["stat", "-f", "-c", "%T", b.work], 10, out=True).strip()
    # The binaries as they are now: a rebuild during the run changes
    # nothing measured.
    b.build = describe_build(b.ckptfs, a.srcdir)
    for attr in ("ckptfs", "mkckpt", "check_scan"):
        src = getattr(b, attr)
        if src:
            dst = os.path.join(b.work, "bin-" + os.path.basename(src))
            shutil.copy2(src, dst)
            setattr(b, attr, dst)
    log("work directory %s (%s)" % (b.work, fstype))

    b.benchtool = os.path.join(b.work, "benchtool")
    run([cc, "-O2", "-o", b.benchtool,
         os.path.join(top, "scripts", "bench-lib", "benchtool.c")], 120)
    b.hold_dma_latency()

    t0 = time.time()
    rundir = os.path.join(b.work, "run")
    log("making the corpus (%d files, %d MiB large files)" % (
        a.files, a.big_mib))
    facts = make_corpus(b, rundir)
    del facts["pool"]
    os.sync()
    log("corpus: %.0f MB in %.0f s" % (facts["bytes"] / MB,
                                         time.time() - t0))

    paths = {"save_store": os.path.join(b.work, "save-store"),
             "store": os.path.join(b.work, "read-store"),
             "local": os.path.join(b.work, "local"),
             "image": os.path.join(b.work, "tree.sqfs"),
             "store_ckpt": os.path.join(b.work, "store-ckpt"),
             "store_local": os.path.join(b.work, "store-local"),
             "store_image": os.path.join(b.work, "store.sqfs")}
    os.makedirs(paths["save_store"])
    os.makedirs(paths["store"])
    paths["archive"] = os.path.join(paths["store"], "bench.ckpt")
    # 1. Saving (it also makes the archive everything else reads).
    b.load.append("save %s" % loadavg())
    measure_save(b, facts, rundir, paths)
    measure_scan(b)
    # The saved tree, extracted, is "local"; squashfuse gets its image.
    run(["unzip", "-q", paths["archive"], "-d", paths["local"]],
        a.save_timeout)
    if b.have["squashfuse"]:
        t1 = time.time()
        run(["mksquashfs", paths["local"], paths["image"], "-noappend",
             "-quiet", "-no-progress"], a.save_timeout)
        b.notes.append("mksquashfs of the extracted tree took %.1f s "
                       "(not timed as a save)." % (time.time() - t1))
    lists = {"small": os.path.join(b.work, "small.txt")}
    with open(lists["small"], "w") as f:
        f.write("\n".join(facts["small"]) + "\n")
    os.sync()
    # 2. The tree on every system.
    measure_mounts(b, facts, lists, paths)
    # 3. The store of small checkpoints.
    if not b.over_budget():
        log("making the store of %d checkpoints" % a.store)
        first = make_store(b, paths["store_ckpt"], paths["store_local"],
                           a.store)
        if b.have["squashfuse"]:
            run(["mksquashfs", paths["store_local"], paths["store_image"],
                 "-noappend", "-quiet", "-no-progress"], a.save_timeout)
        os.sync()
        b.load.append("store %s" % loadavg())
        measure_store(b, paths, first, a.store)
    elapsed = time.time() - b.t_start
    text = report(b, facts, cmdline, elapsed, fstype)
    if a.out:
        with open(a.out + ".tmp", "w") as f:
            f.write(text)
        os.replace(a.out + ".tmp", a.out)
        log("wrote %s (%.1f minutes)" % (a.out, elapsed / 60))
    elif a.quick:
        print(text)
    else:
        out = os.path.join(top, "BENCHMARKS.md")
        # The record of what each change bought is kept by hand: it
        # survives a new run.
        try:
            with open(out) as f:
                old = f.read()
            at = old.find("\n## What each change bought")
            if at >= 0:
                text = text.rstrip("\n") + "\n" + old[at:]
        except OSError:
            pass
        with open(out + ".tmp", "w") as f:
            f.write(text)
        os.replace(out + ".tmp", out)
        log("wrote %s (%.1f minutes)" % (out, elapsed / 60))
    return 0


if __name__ == "__main__":
    sys.exit(main())
