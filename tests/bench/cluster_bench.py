#!/usr/bin/env python3
"""Cluster benchmarks on tools/lab (3 real etcd members, 3 controller agents).

  takeover   kill -9 the leader agent N times; time until another controller reports itself
             leader (median, p90, max), with the lease TTL stated.
  heartbeat  M simulated nodes, each joined for real (token + CSR -> certificate), beat every
             INTERVAL over mutual TLS with keep-alive to one controller; report that
             controller's CPU (% of one core) and RSS while it carries the load.

Usage: cluster_bench.py NECO_BINARY [takeover|heartbeat|all] [--runs 10] [--nodes 1000]
Not a test: it prints numbers for the issue notes.
"""

import argparse
import concurrent.futures
import http.client
import importlib.machinery
import importlib.util
import json
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_lab():
    loader = importlib.machinery.SourceFileLoader("neco_lab", os.path.join(ROOT, "tools", "lab"))
    spec = importlib.util.spec_from_loader("neco_lab", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


lab_mod = load_lab()


def proc_cpu_rss(pid):
    """(utime+stime seconds, RSS MiB) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
    return cpu, rss


def bench_takeover(binary, runs, ttl):
    tmp = tempfile.mkdtemp(prefix="neco-bench-")
    lab = lab_mod.Lab(os.path.join(tmp, "lab"), binary, nodes=0, election_ttl=f"{ttl}s")
    times = []
    try:
        lab.up()
        for _ in range(runs):
            old = lab.leader()
            lab.controllers[old].kill()
            t0 = time.monotonic()
            while True:
                if any(j != old and lab.status(j).get("role") == "leader" for j in range(3)):
                    break
                time.sleep(0.01)
            times.append(time.monotonic() - t0)
            lab.controllers[old].start()
            lab_mod.wait_for("restart", lambda: lab.status(old).get("cluster", {}).get("serving"),
                             30)
    finally:
        lab.down()
        shutil.rmtree(tmp, ignore_errors=True)
    times.sort()
    print(f"takeover after kill -9 (lease TTL {ttl}s, {runs} runs): "
          f"median {statistics.median(times):.2f}s, p90 {times[int(len(times) * 0.9) - 1]:.2f}s, "
          f"min {times[0]:.2f}s, max {times[-1]:.2f}s")
    return times


class SimNode:
    def __init__(self, name, port, ctx):
        self.name, self.port, self.ctx = name, port, ctx
        self.conn = None
        self.ok = self.failed = 0

    def beat(self):
        body = json.dumps({"name": self.name, "version": "sim", "health": "healthy",
                           "modules": []})
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPSConnection("127.0.0.1", self.port,
                                                            context=self.ctx, timeout=10)
                self.conn.request("POST", "/v1/cluster/heartbeat", body=body,
                                  headers={"Content-Type": "application/json"})
                r = self.conn.getresponse()
                r.read()
                if r.status == 200:
                    self.ok += 1
                else:
                    self.failed += 1
                return
            except (OSError, http.client.HTTPException):
                self.conn = None
        self.failed += 1


def join_sim_nodes(lab, count, work):
    """Joins `count` nodes through the real API: key + CSR by openssl, token, /v1/cluster/join."""
    leader = lab.leader()
    port = lab.info["controllers"][leader]["api"]
    ca_path = os.path.join(lab.dir, f"controller{leader}", "pki", "ca.crt")

    def one(i):
        name = f"sim{i:04d}"
        key, csr = os.path.join(work, f"{name}.key"), os.path.join(work, f"{name}.csr")
        subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
                        "-subj", f"/CN={name}"], check=True, capture_output=True)
        tok = lab.create_token(leader)
        ctx = ssl.create_default_context(cafile=ca_path)
        ctx.check_hostname = False
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
        with open(csr) as f:
            body = json.dumps({"name": name, "token": tok["token"], "csr": f.read()})
        c.request("POST", "/v1/cluster/join", body=body,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        doc = json.loads(r.read())
        c.close()
        if r.status != 200:
            raise RuntimeError(f"join {name}: {r.status} {doc}")
        crt = os.path.join(work, f"{name}.crt")
        with open(crt, "w") as f:
            f.write(doc["cert"])
        node_ctx = ssl.create_default_context(cafile=ca_path)
        node_ctx.check_hostname = False
        node_ctx.load_cert_chain(crt, key)
        return SimNode(name, port, node_ctx)

    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        return list(ex.map(one, range(count))), leader


def bench_heartbeat(binary, count, interval, duration):
    tmp = tempfile.mkdtemp(prefix="neco-bench-")
    lab = lab_mod.Lab(os.path.join(tmp, "lab"), binary, nodes=0, election_ttl="5s",
                      heartbeat=f"{int(interval * 1000)}ms")
    try:
        lab.up()
        t0 = time.monotonic()
        nodes, leader = join_sim_nodes(lab, count, tmp)
        print(f"joined {count} simulated nodes in {time.monotonic() - t0:.1f}s "
              f"(token + CSR + join each)")
        pid = lab.controllers[leader].pid
        stop = threading.Event()
        workers = 16
        slices = [nodes[i::workers] for i in range(workers)]

        def drive(mine, offset):
            # Spread each worker's beats evenly over the interval, as real nodes would be.
            gap = interval / max(1, len(mine))
            nxt = time.monotonic() + offset
            while not stop.is_set():
                for n in mine:
                    delay = nxt - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        return
                    n.beat()
                    nxt += gap

        threads = [threading.Thread(target=drive, args=(s, k * interval / workers / len(slices)))
                   for k, s in enumerate(slices)]
        for t in threads:
            t.start()
        time.sleep(interval * 1.5)  # warm-up: every connection open, one round of beats done
        cpu0, _ = proc_cpu_rss(pid)
        w0 = time.monotonic()
        ok0 = sum(n.ok for n in nodes)
        rss = []
        while time.monotonic() - w0 < duration:
            time.sleep(1)
            rss.append(proc_cpu_rss(pid)[1])
        cpu1, _ = proc_cpu_rss(pid)
        wall = time.monotonic() - w0
        beats = sum(n.ok for n in nodes) - ok0
        stop.set()
        for t in threads:
            t.join()
        failed = sum(n.failed for n in nodes)
        view = lab.nodes_view(leader)
        healthy = sum(1 for n in view if n["state"] == "healthy")
        print(f"heartbeat load: {count} nodes every {interval}s over mutual TLS to one "
              f"controller, {wall:.0f}s window: {beats / wall:.1f} beats/s accepted, "
              f"{failed} failed; controller CPU {100 * (cpu1 - cpu0) / wall:.1f}% of one core, "
              f"RSS median {statistics.median(rss):.1f} MiB (max {max(rss):.1f}); "
              f"{healthy}/{len(view)} members healthy")
    finally:
        lab.down()
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("what", nargs="?", default="all", choices=["takeover", "heartbeat", "all"])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--ttl", type=int, default=3)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=10)
    ap.add_argument("--duration", type=float, default=60)
    a = ap.parse_args()
    binary = os.path.abspath(a.binary)
    if a.what in ("takeover", "all"):
        bench_takeover(binary, a.runs, a.ttl)
    if a.what in ("heartbeat", "all"):
        bench_heartbeat(binary, a.nodes, a.interval, a.duration)


if __name__ == "__main__":
    sys.exit(main())
