#!/usr/bin/python3
"""Soak test: mixed load, faults and races against the real cairn-server (issue 14).

Runs the built `cairn-server` on loopback and the built `cairn` client:
8 backup workers back up changing raw/qcow2 images concurrently, a reader
restores snapshots while they run, prune (keep-last 2) and GC with grace 0
run every few seconds with verify jobs in between, the server is SIGKILLed in
the middle and started again on the same data folder, and backup clients are
SIGKILLed at random points. At the end every snapshot that exists must
restore byte-identical to the image as it was when its backup ran, verify must
be clean, `.staging/` must be empty and every chunk a committed index names
must exist. Any difference is printed and the exit status is 1.

Usage: soak_test.py BUILD_DIR [--duration S] [--seed N] [--keep] [--break corrupt-chunk]
Duration of the load phase: --duration, else $CAIRN_SOAK_SECONDS, else
--default-duration (150 s; CTest passes 60 s for sanitizer builds). The final
checks add about half a minute. See tests/soak/README.md.
"""

import argparse
import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time

VMS = 8
IMAGE_MIB = 48
KEEP_LAST = 2
SESSION_TIMEOUT = 10  # seconds: a killed client's session is aborted after this


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Failures:
    def __init__(self):
        self.lock = threading.Lock()
        self.items = []

    def add(self, msg):
        with self.lock:
            self.items.append(msg)
        log("FAIL: " + msg)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def inc(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n

    def get(self, key):
        with self.lock:
            return self.c.get(key, 0)


class Server:
    """The real cairn-server on 127.0.0.1, port picked by the kernel."""

    def __init__(self, build, data, logdir):
        self.bin = os.path.join(build, "server", "cairn-server")
        self.data = data
        self.logdir = logdir
        self.proc = None
        self.port = None
        self.fingerprint = None
        self.starts = 0
        self.kills = 0
        self.down = False
        self.lock = threading.Lock()

    def start(self):
        self.starts += 1
        path = os.path.join(self.logdir, f"server-{self.starts}.log")
        out = open(path, "wb")
        proc = subprocess.Popen(
            [self.bin, "--data", self.data, "run", "--listen", "127.0.0.1:0",
             "--session-timeout", str(SESSION_TIMEOUT)],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        out.close()
        deadline = time.time() + 60
        port = fp = None
        while time.time() < deadline and (port is None or fp is None):
            if proc.poll() is not None:
                raise RuntimeError(f"cairn-server exited at start: {open(path).read()}")
            text = open(path, errors="replace").read()
            m = re.search(r"listening on https://127\.0\.0\.1:(\d+)/", text)
            f = re.search(r"fingerprint \(SHA-256\): ([0-9A-F:]{95})", text)
            port = m and int(m.group(1))
            fp = f and f.group(1)
            time.sleep(0.05)
        if port is None or fp is None:
            proc.kill()
            raise RuntimeError(f"cairn-server did not print its port and fingerprint: {path}")
        with self.lock:
            self.proc, self.port, self.fingerprint = proc, port, fp
            self.down = False
        log(f"server start #{self.starts}: pid {proc.pid}, port {port}")

    def url(self):
        with self.lock:
            return f"https://127.0.0.1:{self.port}/default"

    def epoch(self):
        """Opaque: an operation whose epoch changed (or began while down) met the restart."""
        with self.lock:
            return (self.kills, self.down)

    def kill(self):
        with self.lock:
            proc = self.proc
            self.kills += 1
            self.down = True
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        log(f"server pid {proc.pid} SIGKILLed")

    def stop(self):
        with self.lock:
            proc = self.proc
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def admin(self, *args):
        return subprocess.run([self.bin, "--data", self.data, *args],
                              capture_output=True, text=True, timeout=120)


class Soak:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build_dir)
        self.cairn = os.path.join(self.build, "client", "cairn")
        self.work = tempfile.mkdtemp(prefix="cairn-soak-")
        self.data = os.path.join(self.work, "data")
        self.store = os.path.join(self.data, "stores", "default")
        self.rng = random.Random(args.seed)
        self.fail = Failures()
        self.stats = Stats()
        self.server = Server(self.build, self.data, self.work)
        self.stop_load = threading.Event()
        self.tokens = {}
        # snapshot name -> (sha256 of the image at its backup, archive name)
        self.committed = {}
        # every attempt: (vm, start, end, sha, archive, outcome)
        self.attempts = []
        self.rec_lock = threading.Lock()
        self.running = {}  # vm -> Popen of the running `cairn backup`
        self.run_lock = threading.Lock()
        self.slowest_exit = 0.0  # s from a client's SIGKILL to its daemon's end

    # ----- helpers -------------------------------------------------------
    def env(self, token):
        e = dict(os.environ)
        e.update(CAIRN_REPO=self.server.url(), CAIRN_TOKEN=self.tokens[token],
                 CAIRN_FINGERPRINT=self.server.fingerprint)
        return e

    def cairn_run(self, token, *args, timeout=600):
        return subprocess.run([self.cairn, "--output", "json", *args], env=self.env(token),
                              capture_output=True, text=True, timeout=timeout)

    def api(self, method, path, body=None):
        """One API call as admin; the certificate is checked by its pinned fingerprint."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", self.server.port, context=ctx, timeout=120)
        try:
            conn.connect()
            der = conn.sock.getpeercert(binary_form=True)
            fp = ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())
            if fp != self.server.fingerprint:
                raise RuntimeError(f"fingerprint {fp} is not the pinned {self.server.fingerprint}")
            headers = {"Authorization": "CairnToken " + self.tokens["admin"]}
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, "/api/v1" + path, body=data, headers=headers)
            r = conn.getresponse()
            text = r.read().decode(errors="replace")
            return r.status, (json.loads(text) if text.strip().startswith(("{", "[")) else text)
        finally:
            conn.close()

    def wait_task(self, task_id, limit=300):
        deadline = time.time() + limit
        while time.time() < deadline:
            status, t = self.api("GET", f"/tasks/{task_id}")
            if status != 200:
                return None
            if t.get("state") != "running":
                return t
            time.sleep(0.2)
        return None

    @staticmethod
    def sha256_file(path):
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    return h.hexdigest()
                h.update(b)

    # ----- set-up --------------------------------------------------------
    def setup(self):
        os.makedirs(self.data)
        self.server.start()
        self.tokens["admin"] = open(os.path.join(self.data, "admin.token")).read().strip()
        r = self.server.admin("user", "add", "soak")
        if r.returncode != 0:
            raise RuntimeError("user add: " + r.stdout + r.stderr)
        names = [f"b{i}" for i in range(VMS)] + ["reader"]
        for name in names:
            r = self.server.admin("token", "create", f"soak!{name}")
            m = re.search(r"(soak!" + name + r":\S+)", r.stdout)
            if r.returncode != 0 or not m:
                raise RuntimeError("token create: " + r.stdout + r.stderr)
            self.tokens[name] = m.group(1)
            role = "Reader" if name == "reader" else "Backup"
            r = self.server.admin("acl", "set", "--store", "default", "--role", role,
                                  "--auth", f"soak!{name}")
            if r.returncode != 0:
                raise RuntimeError("acl set: " + r.stdout + r.stderr)
        self.images = []
        for i in range(VMS):
            fmt = "qcow2" if i % 2 else "raw"
            img = os.path.join(self.work, f"disk{i}.{fmt}")
            shadow = os.path.join(self.work, f"disk{i}.shadow")  # the guest-visible bytes
            with open(shadow, "wb") as f:
                f.truncate(IMAGE_MIB << 20)
            if fmt == "raw":
                shutil.copyfile(shadow, img)
                shadow = img
            else:
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img,
                                f"{IMAGE_MIB}M"], check=True)
            self.images.append((img, fmt, shadow))
        for i in range(VMS):
            self.mutate(i, self.rng, writes=6)

    def mutate(self, vm, rng, writes=None):
        """Random 64 KiB..4 MiB writes of random bytes (and now and then zeroes)."""
        img, fmt, shadow = self.images[vm]
        size = IMAGE_MIB << 20
        for _ in range(writes or rng.randint(1, 4)):
            length = rng.randint(16, 1024) * 4096
            off = rng.randrange(0, size - length + 1, 512)
            data = bytes(length) if rng.random() < 0.1 else rng.randbytes(length)
            with open(shadow, "r+b") as f:
                f.seek(off)
                f.write(data)
            if fmt == "qcow2":
                src = os.path.join(self.work, f"write{vm}.bin")
                with open(src, "wb") as f:
                    f.write(data)
                r = subprocess.run(["qemu-io", "-f", "qcow2", "-c",
                                    f"write -q -s {src} {off} {length}", img],
                                   capture_output=True, text=True)
                if r.returncode != 0 or r.stdout.strip() or r.stderr.strip():
                    raise RuntimeError(f"qemu-io write into {img}: {r.stdout}{r.stderr}")

    # ----- load ----------------------------------------------------------
    def backup_worker(self, vm):
        rng = random.Random(self.args.seed * 1000 + vm)
        img, fmt, shadow = self.images[vm]
        archive = os.path.basename(img)
        while not self.stop_load.is_set():
            sha = self.sha256_file(shadow)
            env = self.env(f"b{vm}")
            start = time.time()
            proc = subprocess.Popen(
                [self.cairn, "--output", "json", "backup", "image", "--id", str(vm + 1), img],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                start_new_session=True)
            with self.run_lock:
                self.running[vm] = proc
            try:
                out, err = proc.communicate(timeout=600)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                out, err = proc.communicate()
                self.fail.add(f"vm/{vm + 1}: backup hung for 600 s: {err.strip()[-300:]}")
            with self.run_lock:
                self.running.pop(vm, None)
            end = time.time()
            self.stats.inc("backups attempted")
            outcome = "failed"
            if proc.returncode == 0:
                try:
                    snap = json.loads(out.strip().splitlines()[-1])["snapshot"]
                except (ValueError, KeyError, IndexError):
                    snap = None
                    self.fail.add(f"vm/{vm + 1}: exit 0 without a snapshot in --output json: {out!r}")
                if snap:
                    with self.rec_lock:
                        if snap in self.committed:
                            self.fail.add(f"{snap}: reported committed twice")
                        self.committed[snap] = (sha, archive)
                    self.stats.inc("backups committed")
                    outcome = snap
            elif proc.returncode == -signal.SIGKILL:
                self.stats.inc("backups killed")
                outcome = "killed"
                self.reap_orphans(vm, proc.pid)
            else:
                self.stats.inc("backups failed")
                first = (err.strip().splitlines() or ["(no message)"])[-1]
                with self.rec_lock:
                    self.fail_reasons[first[:160]] = self.fail_reasons.get(first[:160], 0) + 1
            with self.rec_lock:
                self.attempts.append((vm, start, end, sha, archive, outcome))
            if outcome in ("failed", "killed"):
                time.sleep(rng.uniform(0.5, 2.0))  # e.g. the group's session is still open
            self.mutate(vm, rng)

    def restore_check(self, snap, sha, archive, target):
        r = self.cairn_run("reader", "restore", snap, archive, target)
        if r.returncode != 0:
            return (r.stderr.strip().splitlines() or ["(no message)"])[-1]
        got = self.sha256_file(target)
        if got != sha:
            return f"MISMATCH: restored sha256 {got}, image at backup time {sha}"
        return None

    def reader(self):
        rng = random.Random(self.args.seed + 7)
        target = os.path.join(self.work, "restore-live.raw")
        while not self.stop_load.wait(rng.uniform(0.5, 2.0)):
            with self.rec_lock:
                snaps = list(self.committed.items())
            if not snaps:
                continue
            snap, (sha, archive) = rng.choice(snaps[-16:])
            gen = self.server.epoch()
            err = self.restore_check(snap, sha, archive, target)
            if err is None:
                self.stats.inc("restores checked (live)")
            elif err.startswith("MISMATCH"):
                self.fail.add(f"live restore of {snap}: {err}")
            else:
                self.stats.inc("restores failed (live)")
                # Expected only when the server was killed during the restore.
                self.live_restore_errors.append((self.met_restart(gen), snap, err))
            if os.path.exists(target):
                os.unlink(target)

    def maintenance(self):
        rng = random.Random(self.args.seed + 11)
        cycle = 0
        while not self.stop_load.wait(rng.uniform(2.0, 5.0)):
            cycle += 1
            gen = self.server.epoch()
            try:
                for vm in range(VMS):
                    r = self.cairn_run("admin", "prune", f"vm/{vm + 1}", "--keep-last",
                                       str(KEEP_LAST), timeout=120)
                    self.stats.inc("prunes" if r.returncode == 0 else "prunes failed")
                    if r.returncode != 0:
                        self.maint_errors.append((self.met_restart(gen), f"prune vm/{vm + 1} "
                                                  f"(exit {r.returncode}): {r.stderr.strip()[-300:]}"))
                status, body = self.api("POST", "/datastores/default/gc", {"grace-seconds": 0})
                if status == 202:
                    t = self.wait_task(body["task"])
                    ok = t is not None and t.get("state") in ("ok", "warnings")
                    self.stats.inc("GCs" if ok else "GCs failed")
                    if t is None or t.get("state") not in ("ok", "warnings"):
                        self.maint_errors.append((self.met_restart(gen), f"GC task: {t}"))
                else:
                    self.stats.inc("GCs failed")
                if cycle % 3 == 0:
                    r = self.cairn_run("admin", "verify", timeout=300)
                    if r.returncode == 0:
                        self.stats.inc("verifies")
                    else:
                        self.stats.inc("verifies failed")
                        self.maint_errors.append((self.met_restart(gen),
                            f"verify during load (exit {r.returncode}): "
                            f"{(r.stdout + r.stderr).strip()[-600:]}"))
            except (OSError, http.client.HTTPException, RuntimeError) as e:
                self.stats.inc("maintenance errors (connection)")
                self.maint_errors.append((self.met_restart(gen), f"maintenance: {e}"))

    def met_restart(self, epoch):
        return epoch[1] or epoch != self.server.epoch()

    def chaos(self, duration):
        """SIGKILLs: `cairn backup` clients at random points, the server once in the middle."""
        rng = random.Random(self.args.seed + 13)
        t0 = time.time()
        server_killed = False
        while not self.stop_load.wait(rng.uniform(2.0, 6.0)):
            if not server_killed and time.time() - t0 >= duration * rng.uniform(0.4, 0.6):
                server_killed = True
                self.server.kill()
                self.stats.inc("server SIGKILLs")
                time.sleep(rng.uniform(0.5, 2.0))
                self.server.start()
                continue
            with self.run_lock:
                victims = list(self.running.items())
            if not victims:
                continue
            vm, proc = rng.choice(victims)
            time.sleep(rng.uniform(0.0, 0.8))  # a random point of its run
            if proc.poll() is not None:
                continue
            try:
                os.kill(proc.pid, signal.SIGKILL)  # the client alone, as an OOM kill would
            except ProcessLookupError:
                continue
            self.stats.inc("client SIGKILLs")
            log(f"client of vm/{vm + 1} (pid {proc.pid}) SIGKILLed")

    def reap_orphans(self, vm, sid):
        """After a client's SIGKILL its qemu-storage-daemon (same session) must end
        within 30 s: one left running keeps the image's write lock, and neither the
        VM nor the next backup can open the image. Such a leftover fails the run
        and is killed, so the writer and the next backup can go on. (It gets
        SIGTERM when the client dies and quits; a daemon in the middle of a
        backup job took 1-2 s to under load, sometimes more than 5 s.)"""
        start = time.time()
        while True:
            alive = subprocess.run(["pgrep", "-s", str(sid)], capture_output=True,
                                   text=True).stdout.split()
            if not alive:
                with self.rec_lock:
                    self.slowest_exit = max(self.slowest_exit, time.time() - start)
                return
            if time.time() > start + 30:
                break
            time.sleep(0.1)
        self.stats.inc("processes left running by a killed client")
        self.fail.add(f"vm/{vm + 1}: the SIGKILLed client (pid {sid}) left {len(alive)} "
                      f"process(es) running 30 s later: "
                      + subprocess.run(["ps", "-o", "pid=,args=", "-s", str(sid)],
                                       capture_output=True, text=True).stdout.strip()[:300])
        try:
            os.killpg(sid, signal.SIGKILL)
        except ProcessLookupError:
            return
        deadline = time.time() + 10
        while time.time() < deadline and subprocess.run(
                ["pgrep", "-s", str(sid)], capture_output=True).returncode == 0:
            time.sleep(0.1)

    # ----- final checks --------------------------------------------------
    def list_snapshots(self):
        r = self.cairn_run("admin", "snapshots", timeout=120)
        if r.returncode != 0:
            raise RuntimeError("cairn snapshots: " + r.stderr)
        out = json.loads(r.stdout)
        names = set()
        for s in out:
                names.add(s["snapshot"])
        return names

    def snapshot_dirs(self):
        found = set()
        vmdir = os.path.join(self.store, "vm")
        if os.path.isdir(vmdir):
            for vid in os.listdir(vmdir):
                g = os.path.join(vmdir, vid)
                for t in os.listdir(g):
                    if os.path.isdir(os.path.join(g, t)):
                        found.add(f"vm/{vid}/{t}")
        return found

    def missing_chunks(self):
        """Every digest of every committed .fidx has its chunk file (storage/FORMAT.md)."""
        missing = []
        indexes = 0
        for snap in sorted(self.snapshot_dirs()):
            d = os.path.join(self.store, snap)
            for name in os.listdir(d):
                if not name.endswith(".fidx"):
                    continue
                indexes += 1
                raw = open(os.path.join(d, name), "rb").read()
                if raw[:8] != b"CRNFIDX1" or len(raw) < 128 or (len(raw) - 128) % 32:
                    missing.append(f"{snap}/{name}: not a fixed index ({len(raw)} bytes)")
                    continue
                (size, csize) = struct.unpack_from("<QQ", raw, 40)
                n = (len(raw) - 128) // 32
                if n != -(-size // csize):
                    missing.append(f"{snap}/{name}: {n} digests for {size} bytes")
                for i in range(n):
                    dg = raw[128 + 32 * i:160 + 32 * i].hex()
                    p = os.path.join(self.store, ".chunks", dg[:4], dg)
                    if not os.path.isfile(p):
                        missing.append(f"{snap}/{name}: chunk {i} {dg} missing ({p})")
        return indexes, missing

    def final_checks(self):
        log("final checks: waiting for killed clients' sessions to time out")
        staging = os.path.join(self.store, ".staging")
        deadline = time.time() + SESSION_TIMEOUT + 60
        left = os.listdir(staging)
        while left and time.time() < deadline:
            time.sleep(1)
            left = os.listdir(staging)
        if left:
            self.fail.add(f".staging/ not empty {SESSION_TIMEOUT + 60} s after the load ended: "
                          f"{sorted(left)}")

        status, body = self.api("POST", "/datastores/default/gc", {"grace-seconds": 0})
        t = self.wait_task(body["task"]) if status == 202 else None
        if t is None or t.get("state") not in ("ok", "warnings"):
            self.fail.add(f"final GC: HTTP {status} {body} task {t}")
        else:
            self.stats.inc("GCs")

        listed = self.list_snapshots()
        on_disk = self.snapshot_dirs()
        if listed != on_disk:
            self.fail.add(f"listing and disk differ: only listed {sorted(listed - on_disk)}, "
                          f"only on disk {sorted(on_disk - listed)}")

        if self.args.break_mode == "corrupt-chunk":
            self.corrupt_one_chunk(on_disk)

        # Snapshots no client reported: must be the complete image of an
        # attempt whose client died after the server committed it.
        target = os.path.join(self.work, "restore-final.raw")
        for snap in sorted(on_disk):
            with self.rec_lock:
                rec = self.committed.get(snap)
            if rec is None:
                rec = self.match_unreported(snap)
                if rec is None:
                    self.fail.add(f"{snap}: committed on the server, but no backup reported it "
                                  f"and no failed attempt of that group ran at that time")
                    continue
                self.stats.inc("snapshots committed by failed/killed clients")
            err = self.restore_check(snap, rec[0], rec[1], target)
            if err:
                self.fail.add(f"final restore of {snap}: {err}")
            else:
                self.stats.inc("restores checked (final)")
        if os.path.exists(target):
            os.unlink(target)

        r = self.cairn_run("admin", "verify", timeout=600)
        self.stats.inc("verifies")
        if r.returncode != 0:
            self.fail.add(f"final verify (exit {r.returncode}): {(r.stdout + r.stderr).strip()[-2000:]}")

        indexes, missing = self.missing_chunks()
        self.stats.inc("indexes checked for missing chunks", indexes)
        for m in missing[:50]:
            self.fail.add("missing chunk: " + m)

        with self.rec_lock:
            reported = set(self.committed)
        # Reported committed and not pruned? prune keeps the newest KEEP_LAST per group.
        for vm in range(VMS):
            mine = sorted(s for s in reported if s.startswith(f"vm/{vm + 1}/"))
            for s in mine[-KEEP_LAST:]:
                if s not in on_disk:
                    self.fail.add(f"{s}: reported committed, among the newest {KEEP_LAST} of its "
                                  f"group, but gone")

        self.server.stop()
        r = self.server.admin("verify", "default")
        if r.returncode != 0:
            self.fail.add(f"offline `cairn-server verify default` (exit {r.returncode}): "
                          f"{(r.stdout + r.stderr).strip()[-2000:]}")
        left = os.listdir(staging)
        if left:
            self.fail.add(f".staging/ not empty after the server stopped: {sorted(left)}")

    def match_unreported(self, snap):
        _, vid, t = snap.split("/")
        ts = time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
        with self.rec_lock:
            for vm, start, end, sha, archive, outcome in self.attempts:
                if vm + 1 == int(vid) and outcome in ("failed", "killed") \
                        and start - 1 <= ts <= end + 1:
                    return (sha, archive)
        return None

    def corrupt_one_chunk(self, snaps):
        snap = sorted(snaps)[0]
        d = os.path.join(self.store, snap)
        fidx = [n for n in os.listdir(d) if n.endswith(".fidx")][0]
        raw = open(os.path.join(d, fidx), "rb").read()
        dg = raw[128:160].hex()
        p = os.path.join(self.store, ".chunks", dg[:4], dg)
        with open(p, "r+b") as f:
            f.seek(os.path.getsize(p) // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0xFF]))
        log(f"--break corrupt-chunk: flipped a byte of {p} (chunk 0 of {snap}/{fidx})")

    # ----- run -----------------------------------------------------------
    def run(self, duration):
        t0 = time.time()
        self.fail_reasons = {}
        self.live_restore_errors = []
        self.maint_errors = []
        self.setup()
        log(f"work dir {self.work}; load for {duration} s, {VMS} VMs of {IMAGE_MIB} MiB")
        threads = [threading.Thread(target=self.backup_worker, args=(vm,), name=f"vm{vm}")
                   for vm in range(VMS)]
        threads += [threading.Thread(target=self.reader, name="reader"),
                    threading.Thread(target=self.maintenance, name="maintenance"),
                    threading.Thread(target=self.chaos, args=(duration,), name="chaos")]
        for th in threads:
            th.start()
        load_end = t0 + duration
        while time.time() < load_end and all(th.is_alive() for th in threads):
            time.sleep(1)
        dead = [th.name for th in threads if not th.is_alive()]
        if dead:
            self.fail.add(f"load threads died early: {dead}")
        self.stop_load.set()
        for th in threads:
            th.join()
        load_seconds = time.time() - t0
        # Live restore failures outside the restart window are failures.
        for (restarted, snap, err) in self.live_restore_errors:
            if restarted:
                continue
            if "not found" in err.lower() or "404" in err:
                continue  # pruned between the pick and the restore
            self.fail.add(f"live restore of {snap} failed outside the restart: {err}")
        # Verify or GC failing outside the restart window is a failure.
        for restarted, e in self.maint_errors:
            if restarted:
                log("note (server restart): " + e)
            else:
                self.fail.add(e)
        self.final_checks()
        self.summary(load_seconds, time.time() - t0)
        return 1 if self.fail.items else 0

    def summary(self, load_seconds, total):
        s = self.stats
        print("\n===== soak summary =====")
        print(f"duration: load {load_seconds:.0f} s, total {total:.0f} s "
              f"(seed {self.args.seed}, {VMS} VMs x {IMAGE_MIB} MiB, raw and qcow2)")
        print(f"backups: attempted {s.get('backups attempted')}, committed "
              f"{s.get('backups committed')}, failed {s.get('backups failed')}, "
              f"killed {s.get('backups killed')}")
        for k in sorted(s.c):
            if k not in ("backups attempted", "backups committed", "backups failed",
                         "backups killed"):
                print(f"{k}: {s.c[k]}")
        print(f"slowest end of a killed client's qemu-storage-daemon: {self.slowest_exit:.1f} s")
        if self.fail_reasons:
            print("failed backups by last message:")
            for msg, n in sorted(self.fail_reasons.items(), key=lambda x: -x[1]):
                print(f"  {n:4d}  {msg}")
        if self.fail.items:
            print(f"RESULT: FAILED ({len(self.fail.items)} problems)")
            for f in self.fail.items:
                print("  - " + f)
        else:
            print("RESULT: OK")

    def cleanup(self):
        self.stop_load.set()
        with self.run_lock:
            procs = list(self.running.values())
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.server.stop()
        if self.fail.items or self.args.keep:
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("build_dir")
    ap.add_argument("--duration", type=int, help="seconds of load (wins over the others)")
    ap.add_argument("--default-duration", type=int, default=150,
                    help="seconds of load when neither --duration nor $CAIRN_SOAK_SECONDS is set")
    ap.add_argument("--seed", type=int, default=int(os.environ.get("CAIRN_SOAK_SEED",
                                                                   str(int(time.time()) % 100000))))
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--break", dest="break_mode", choices=["corrupt-chunk"],
                    help="damage the datastore before the final checks (the test must fail)")
    args = ap.parse_args()
    for prog in ("qemu-img", "qemu-io", "qemu-storage-daemon", "pgrep"):
        if shutil.which(prog) is None:
            print(f"soak: {prog} not found", file=sys.stderr)
            return 1
    soak = Soak(args)
    try:
        duration = args.duration or int(os.environ.get("CAIRN_SOAK_SECONDS", "0")) \
            or args.default_duration
        return soak.run(duration)
    finally:
        soak.cleanup()


if __name__ == "__main__":
    sys.exit(main())
