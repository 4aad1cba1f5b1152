#!/usr/bin/env python3
"""The exporter module side by side with the real prometheus-node-exporter, same collectors,
same host, one run.

Both run the collectors neco implements (read back from its own
node_scrape_collector_success series); node_exporter's own go_/process_ metrics are off
(--web.disable-exporter-metrics) so both bodies carry node metrics alone, apart from neco's
agent metrics which it cannot switch off. `wrk` (one thread, one keep-alive connection, as
Prometheus scrapes) drives each exporter in alternating blocks of BLOCK seconds, ROUNDS times,
so both see the same machine state and the client's own cost stays small.

Reported per exporter, without and with gzip:
  wall    median over blocks of wrk's p50 latency, and the median of its p90s
  cpu     exporter CPU per scrape: (utime+stime during the blocks) / scrapes, /proc/PID/stat
  rss     VmRSS after the run and VmHWM (peak)
  bytes   body size
and the ratios node_exporter / neco.

Usage: exporter_bench.py NECO_BINARY [--rounds 5] [--block 2] [--json]
Not a test: it prints numbers for the issue notes.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
from neco_harness import Agent, free_port, http, wait_for  # noqa: E402

NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def memory_kib(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1])
    return out


WRK = shutil.which("wrk")


def wrk_seconds(text):
    """'1.23ms' / '456.00us' / '1.01s' -> seconds."""
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text)
    if not m:
        raise SystemExit(f"unexpected wrk duration {text!r}")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


class Target:
    def __init__(self, name, pid, port):
        self.name, self.pid, self.port = name, pid, port
        self.p50 = {False: [], True: []}
        self.p90 = {False: [], True: []}
        self.cpu = {False: 0.0, True: 0.0}
        self.requests = {False: 0, True: 0}
        self.bytes = {}

    def headers(self, gz):
        h = {"Accept": "text/plain"}
        if gz:
            h["Accept-Encoding"] = "gzip"
        return h

    def probe(self, gz):
        """One scrape through urllib: checks the answer and records the body size."""
        status, headers, body = http("GET", f"http://127.0.0.1:{self.port}/metrics",
                                     headers=self.headers(gz))
        if status != 200:
            raise SystemExit(f"{self.name}: HTTP {status}: {body[:200]!r}")
        if gz and headers.get("Content-Encoding") != "gzip":
            raise SystemExit(f"{self.name}: asked for gzip, got {headers.get('Content-Encoding')}")
        self.bytes[gz] = len(body)

    def block(self, seconds, gz):
        args = [WRK, "-t1", "-c1", f"-d{seconds}s", "--latency", "--timeout", "10s"]
        for k, v in self.headers(gz).items():
            args += ["-H", f"{k}: {v}"]
        args.append(f"http://127.0.0.1:{self.port}/metrics")
        c0 = cpu_seconds(self.pid)
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        self.cpu[gz] += cpu_seconds(self.pid) - c0
        lat = dict(re.findall(r"^\s+(50|90)%\s+(\S+)$", out, re.M))
        n = re.search(r"^\s*(\d+) requests in", out, re.M)
        if not lat or not n or re.search(r"Non-2xx|Socket errors", out):
            raise SystemExit(f"{self.name}: wrk failed:\n{out}")
        self.p50[gz].append(wrk_seconds(lat["50"]))
        self.p90[gz].append(wrk_seconds(lat["90"]))
        self.requests[gz] += int(n.group(1))


def start_neco(binary, workdir):
    a = Agent(binary)
    a.set_modules("modules:\n  exporter: {}\n")
    a.start()
    return a


def neco_collectors(port):
    status, _, body = http("GET", f"http://127.0.0.1:{port}/metrics",
                           headers={"Accept": "text/plain"})
    assert status == 200
    return sorted(set(re.findall(r'^node_scrape_collector_success\{collector="([^"]+)"\}',
                                 body.decode(), re.M)))


def start_node_exporter(collectors, textfile_dir):
    port = free_port()
    args = [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
            "--collector.disable-defaults", "--web.disable-exporter-metrics",
            f"--collector.textfile.directory={textfile_dir}"]
    args += [f"--collector.{c}" for c in collectors]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_for(lambda: http("GET", f"http://127.0.0.1:{port}/metrics")[0] == 200,
                    timeout=20):
        proc.kill()
        raise SystemExit("node_exporter did not come up")
    return proc, port


def summary(t, gz):
    return {
        "wall_median_ms": statistics.median(t.p50[gz]) * 1e3,
        "wall_p90_ms": statistics.median(t.p90[gz]) * 1e3,
        "cpu_per_scrape_ms": t.cpu[gz] / t.requests[gz] * 1e3,
        "scrapes": t.requests[gz],
        "bytes": t.bytes[gz],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("neco")
    ap.add_argument("--rounds", type=int, default=5, help="blocks per exporter and setting")
    ap.add_argument("--block", type=int, default=2, help="seconds per block")
    ap.add_argument("--json", action="store_true")
    opts = ap.parse_args()
    if not NODE_EXPORTER:
        raise SystemExit("prometheus-node-exporter is not installed")
    if not WRK:
        raise SystemExit("wrk is not installed")

    work = tempfile.mkdtemp(prefix="neco-exbench-")
    textfile_dir = os.path.join(work, "textfile")
    os.mkdir(textfile_dir)
    agent = start_neco(opts.neco, work)
    ne = None
    try:
        collectors = neco_collectors(agent.metrics_port)
        ne, ne_port = start_node_exporter(collectors, textfile_dir)
        targets = [Target("neco", agent.proc.pid, agent.metrics_port),
                   Target("node_exporter", ne.pid, ne_port)]
        for t in targets:  # check both answer, and warm up (caches, heaps)
            for gz in (False, True):
                for _ in range(10):
                    t.probe(gz)
        for _ in range(opts.rounds):
            for gz in (False, True):
                for t in targets:
                    t.block(opts.block, gz)
        result = {"collectors": collectors, "rounds": opts.rounds, "block_seconds": opts.block}
        for t in targets:
            mem = memory_kib(t.pid)
            result[t.name] = {"plain": summary(t, False), "gzip": summary(t, True),
                              "rss_kib": mem["VmRSS"], "hwm_kib": mem["VmHWM"]}
        n, e = result["neco"], result["node_exporter"]
        result["ratios"] = {
            "wall_plain": e["plain"]["wall_median_ms"] / n["plain"]["wall_median_ms"],
            "wall_gzip": e["gzip"]["wall_median_ms"] / n["gzip"]["wall_median_ms"],
            "cpu_plain": e["plain"]["cpu_per_scrape_ms"] / max(n["plain"]["cpu_per_scrape_ms"], 1e-9),
            "cpu_gzip": e["gzip"]["cpu_per_scrape_ms"] / max(n["gzip"]["cpu_per_scrape_ms"], 1e-9),
            "rss": n["rss_kib"] / e["rss_kib"],
        }
    finally:
        if ne:
            ne.kill()
            ne.wait()
        agent.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    if opts.json:
        print(json.dumps(result, indent=2))
        return
    print(f"collectors ({len(result['collectors'])}): {', '.join(result['collectors'])}")
    print(f"{opts.rounds} alternating wrk blocks of {opts.block}s per exporter and setting")
    print(f"{'':14} {'':5} {'wall p50':>9} {'wall p90':>9} {'cpu/scrape':>10} {'scrapes':>8}"
          f" {'body':>7} {'RSS':>7} {'peak RSS':>8}")
    for name in ("neco", "node_exporter"):
        r = result[name]
        for mode in ("plain", "gzip"):
            s = r[mode]
            print(f"{name:14} {mode:5} {s['wall_median_ms']:7.3f}ms {s['wall_p90_ms']:7.3f}ms "
                  f"{s['cpu_per_scrape_ms']:8.3f}ms {s['scrapes']:8d} {s['bytes']:7d} "
                  f"{r['rss_kib'] / 1024:6.1f}M {r['hwm_kib'] / 1024:7.1f}M")
    q = result["ratios"]
    print(f"node_exporter / neco: wall {q['wall_plain']:.1f}x (gzip {q['wall_gzip']:.1f}x), "
          f"cpu {q['cpu_plain']:.1f}x (gzip {q['cpu_gzip']:.1f}x); neco RSS is "
          f"{q['rss']:.2f} of node_exporter's")


if __name__ == "__main__":
    main()
