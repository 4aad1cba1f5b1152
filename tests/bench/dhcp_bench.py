#!/usr/bin/env python3
"""neco's DHCP server against Kea's kea-dhcp4 (memfile leases, persisted), same machine, same
network namespaces, driven by Kea's own perfdhcp acting as a relay (giaddr set, unicast to
port 67), full DORA exchanges.

For each server and each offered rate (exchanges/s, RATES), perfdhcp runs PERIOD seconds with
up to CLIENTS distinct clients; reported: exchanges completed per second, drop percentage
(requests without an answer), and the exchange time round trips DISCOVER-OFFER and REQUEST-ACK,
median and p99, from perfdhcp's per-exchange timestamps (-x t). The answer to "how fast" is the highest offered
rate with < 1 % drops.

neco runs as a single controller on its embedded SQLite store: every ACK waits for the group
commit that persists its lease. Kea writes its memfile (a CSV append) per lease.

Usage: dhcp_bench.py NECO_BINARY [--rates 1000,2000,...] [--period 5] [--clients 40000] [--json]
Needs root, iproute2, perfdhcp (kea-admin) and kea-dhcp4 (kea-dhcp4-server).
Not a test: it prints numbers for the issue notes.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "integration"))
from neco_harness import free_port, role_text  # noqa: E402

TAG = f"db{os.getpid() % 100000}"
KEA_THREADS = 0  # --kea-threads
SRV, CLI = f"{TAG}s", f"{TAG}c"


def sh(*args, ns=None, check=True, **kw):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}: {r.stdout}{r.stderr}")
    return r


def lab_up():
    for ns in (SRV, CLI):
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
    sh("ip", "link", "add", "sv0", "netns", SRV, "type", "veth", "peer", "name", "cl0", "netns", CLI)
    sh("ip", "addr", "add", "10.80.0.1/16", "dev", "sv0", ns=SRV)
    sh("ip", "addr", "add", "10.80.0.2/16", "dev", "cl0", ns=CLI)
    sh("ip", "link", "set", "sv0", "up", ns=SRV)
    sh("ip", "link", "set", "cl0", "up", ns=CLI)


def lab_down():
    for ns in (SRV, CLI):
        for p in sh("ip", "netns", "pids", ns, check=False).stdout.split():
            subprocess.run(["kill", "-9", p], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def start_neco(binary, tmp):
    state = os.path.join(tmp, "neco-state")
    role = os.path.join(tmp, "neco.yaml")
    admin = free_port()
    text = role_text(state, admin, free_port(), log_level="warning",
                     cluster_port=free_port())
    text = text.replace("modules: {}\n", """modules:
  netboot:
    dhcp:
      lease_time: 1h
      subnets:
        - subnet: 10.80.0.0/16
          range: 10.80.1.0-10.80.255.254
""")
    with open(role, "w") as f:
        f.write(text)
    log = open(os.path.join(tmp, "neco.log"), "wb")
    proc = subprocess.Popen(["ip", "netns", "exec", SRV, binary, "agent", "--role", role],
                            stdout=log, stderr=log)
    for _ in range(200):
        r = sh("curl", "-s", f"http://127.0.0.1:{admin}/v1/netboot/leases", ns=SRV, check=False)
        if '"answering":true' in r.stdout:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("neco did not start answering DHCP")


def start_kea(tmp):
    conf = os.path.join(tmp, "kea.json")
    with open(conf, "w") as f:
        json.dump({"Dhcp4": {
            "interfaces-config": {"interfaces": ["sv0"], "dhcp-socket-type": "udp"},
            "lease-database": {"type": "memfile", "persist": True,
                               "name": os.path.join(tmp, "kea-leases.csv"), "lfc-interval": 0},
            "valid-lifetime": 3600,
            # Kea's fastest setting on this machine: its packet thread pool (off by default).
            "multi-threading": {"enable-multi-threading": KEA_THREADS > 0,
                                "thread-pool-size": max(KEA_THREADS, 1),
                                "packet-queue-size": 64},
            "subnet4": [{"id": 1, "subnet": "10.80.0.0/16",
                         "pools": [{"pool": "10.80.1.0 - 10.80.255.254"}]}],
            "loggers": [{"name": "kea-dhcp4", "severity": "WARN",
                         "output_options": [{"output": os.path.join(tmp, "kea.log")}]}],
        }}, f)
    env = dict(os.environ, KEA_PIDFILE_DIR=tmp, KEA_LOCKFILE_DIR=tmp)
    proc = subprocess.Popen(["ip", "netns", "exec", SRV, "kea-dhcp4", "-c", conf], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    if proc.poll() is not None:
        raise SystemExit("kea-dhcp4 did not start")
    return proc


def perfdhcp(rate, period, clients):
    r = sh("perfdhcp", "-4", "-r", str(rate), "-R", str(clients), "-p", str(period),
           "-l", "10.80.0.2", "-x", "t", "10.80.0.1", ns=CLI, check=False,
           timeout=period + 60)
    out = r.stdout
    sent = re.search(r"sent packets: (\d+)", out)
    recv = re.findall(r"received packets: (\d+)", out)
    drops = re.findall(r"drops: (\d+)", out)
    # -x t: "sent / received: S / R" (seconds) per successful exchange, per message pair.
    rtts = {"DO": [], "RA": []}
    section = None
    for line in out.splitlines():
        if line.startswith("***Timestamps for packets: DISCOVER-OFFER"):
            section = "DO"
        elif line.startswith("***Timestamps for packets: REQUEST-ACK"):
            section = "RA"
        m = re.match(r"^sent / received: (\d+\.\d+) / (\d+\.\d+)", line)
        if section and m:
            rtts[section].append((float(m.group(2)) - float(m.group(1))) * 1000)
    if not sent or len(recv) < 2:
        raise SystemExit(f"perfdhcp output not understood:\n{out}\n{r.stderr}")
    do_sent = int(sent.group(1))
    ra_recv = int(recv[1])
    drop_pct = 100.0 * (int(drops[0]) + int(drops[1])) / max(1, do_sent + int(
        re.findall(r"sent packets: (\d+)", out)[1]))
    ra = sorted(rtts["RA"])
    do = sorted(rtts["DO"])

    def pct(v, q):
        return v[min(len(v) - 1, int(q * len(v)))] if v else float("nan")
    return {"offered": rate, "exchanges_per_s": ra_recv / period, "drop_pct": drop_pct,
            "do_p50_ms": pct(do, 0.5), "do_p99_ms": pct(do, 0.99),
            "ra_p50_ms": pct(ra, 0.5), "ra_p99_ms": pct(ra, 0.99)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("neco")
    ap.add_argument("--rates", default="1000,2000,4000,7000,10000,14000")
    ap.add_argument("--period", type=int, default=5)
    ap.add_argument("--clients", type=int, default=40000)
    ap.add_argument("--kea-threads", type=int, default=2,
                    help="Kea's packet thread pool (0: Kea's single-threaded default)")
    ap.add_argument("--servers", default="neco,kea")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    global KEA_THREADS
    KEA_THREADS = args.kea_threads
    for tool in ("perfdhcp", "kea-dhcp4", "ip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing (tools/install-deps)")
    rates = [int(r) for r in args.rates.split(",")]
    tmp = tempfile.mkdtemp(prefix="neco-dhcp-bench-")
    lab_down()
    lab_up()
    results = {}
    try:
        for name in args.servers.split(","):
            rows = []
            for rate in rates:
                work = tempfile.mkdtemp(dir=tmp)
                proc = start_neco(os.path.abspath(args.neco), work) if name == "neco" \
                    else start_kea(work)
                try:
                    rows.append(perfdhcp(rate, args.period, args.clients))
                finally:
                    proc.terminate()
                    try:
                        proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        proc.kill()
            results[name] = rows
    finally:
        lab_down()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"perfdhcp DORA, relayed, {args.period}s per step, up to {args.clients} clients")
    print(f"{'server':6} {'offered/s':>9} {'done/s':>8} {'drops%':>7} {'DO p50':>8} {'DO p99':>8}"
          f" {'RA p50':>8} {'RA p99':>8}  (ms)")
    best = {}
    for name, rows in results.items():
        for r in rows:
            print(f"{name:6} {r['offered']:9d} {r['exchanges_per_s']:8.0f} {r['drop_pct']:7.2f}"
                  f" {r['do_p50_ms']:8.3f} {r['do_p99_ms']:8.3f} {r['ra_p50_ms']:8.3f}"
                  f" {r['ra_p99_ms']:8.3f}")
            if r["drop_pct"] < 1.0:
                best[name] = max(best.get(name, 0), r["exchanges_per_s"])
    for name in results:
        print(f"{name}: highest rate with < 1% drops: {best.get(name, 0):.0f} exchanges/s")


if __name__ == "__main__":
    main()
