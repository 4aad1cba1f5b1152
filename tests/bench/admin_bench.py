"""Benchmark of the agent core, not a test: admin endpoint throughput with wrk, and the idle
footprint of a single-node agent. Prints medians of several wrk runs.

Usage: admin_bench.py NECO_BINARY [--seconds 5] [--runs 3] [--connections 32]"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
from neco_harness import Agent, wait_for  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, seconds, connections):
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
                         capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, to_ms(*p50.groups()), to_ms(*p99.groups()), int(errors.group(1)) if errors else 0


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("binary")
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--idle", type=int, default=10, help="seconds of idle measurement")
    args = ap.parse_args()

    agent = Agent(os.path.abspath(args.binary), log_level="warning")
    try:
        agent.start()
        wait_for(lambda: agent.get_json("/status")[1]["role"] == "leader")
        # Idle footprint first, before any load warms caches or grows buffers.
        time.sleep(1)
        c0, t0 = cpu_seconds(agent.proc.pid), time.monotonic()
        time.sleep(args.idle)
        idle_cpu = (cpu_seconds(agent.proc.pid) - c0) / (time.monotonic() - t0) * 100
        rss_idle = agent.rss_kib() / 1024
        print(f"idle: RSS {rss_idle:.1f} MiB, CPU {idle_cpu:.2f} % over {args.idle} s")

        for path in ("/healthz", "/status"):
            runs = [wrk(agent.admin + path, args.seconds, args.connections)
                    for _ in range(args.runs)]
            rps = statistics.median(r[0] for r in runs)
            p50 = statistics.median(r[1] for r in runs)
            p99 = statistics.median(r[2] for r in runs)
            errors = sum(r[3] for r in runs)
            print(f"wrk {path}: {rps:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                  f"(median of {args.runs} x {args.seconds} s, {args.connections} connections, "
                  f"2 wrk threads, non-2xx {errors})")
        print(f"after load: RSS {agent.rss_kib() / 1024:.1f} MiB")
        agent.stop()
    finally:
        agent.cleanup()


if __name__ == "__main__":
    main()
