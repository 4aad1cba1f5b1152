#!/usr/bin/env python3
"""Failover and switchover times of the mysql module, measured end to end through the agent.

Three real mariadbd instances on loopback (a primary and two semi-sync replicas, configured
like the module renders them) and one controller agent (SQLite store) managing them with the
role file's policy defaults (or --policy). A writer thread inserts increasing ids with
autocommit into whichever instance accepts them and records every id a server acknowledged,
when and where; a sampler reads @@read_only of every instance every 20 ms.

  failover    N times: kill -9 the primary under that write load; the time until the first
              write acknowledged by another instance. After each run: every acknowledged id is
              on the new primary and no sample ever saw two writable instances; then the old
              primary is restarted and the agent rejoins it before the next run.
  switchover  N times: `neco mysql switchover`; the write-block time (last write acknowledged
              by the old primary -> first one by the new) and how long the command took.

Usage: mysql_failover_bench.py NECO_BINARY [failover|switchover|all] [--runs 10]
                               [--policy 'failure_confirm: 1s, ...']
Needs mariadb-server and python3-pymysql (Debian packages). anti_flap_window is 0 here,
since the runs fail over one after another on purpose. Not a test: it prints numbers for
the issue notes (median and max), and exits 1 if a run lost an acknowledged write or saw
two writable instances.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
from mariadb_fixture import available, cluster_section, start_cluster  # noqa: E402
from neco_harness import Agent, wait_for  # noqa: E402

try:
    import pymysql
except ImportError:  # a Python outside Debian's (pyenv, venv) does not see the package
    sys.path.append("/usr/lib/python3/dist-packages")
    import pymysql



def connect(port, user="admin", password="adminpw", timeout=1):
    return pymysql.connect(host="127.0.0.1", port=port, user=user, password=password,
                           connect_timeout=timeout, read_timeout=5, write_timeout=5,
                           autocommit=True)


class Writer(threading.Thread):
    """Inserts increasing ids into whichever instance accepts them; an id whose fate is unknown
    (the server did not answer) is never retried. Records (id, time, instance) of every ack."""

    def __init__(self, servers):
        super().__init__(daemon=True)
        self.servers = servers
        self.acks = []
        self.lock = threading.Lock()
        self.stopping = False

    def run(self):
        target, conn, next_id = 0, None, 1000
        while not self.stopping:
            server = self.servers[target]
            try:
                if conn is None:
                    conn = connect(server.port, "app", "apppw")
                i = next_id
                next_id += 1
                conn.cursor().execute(f"INSERT INTO t.x (id) VALUES ({i})")
                with self.lock:
                    self.acks.append((i, time.monotonic(), server.name))
                continue
            except pymysql.MySQLError:
                pass
            try:
                if conn is not None:
                    conn.close()
            except pymysql.MySQLError:
                pass
            conn = None
            target = (target + 1) % len(self.servers)
            time.sleep(0.005)

    def snapshot(self):
        with self.lock:
            return list(self.acks)

    def first_after(self, t, not_name):
        with self.lock:
            return next(((i, at, n) for i, at, n in self.acks if at >= t and n != not_name), None)


class Sampler(threading.Thread):
    """Reads @@read_only of every instance in turn; remembers the most seen writable at once."""

    def __init__(self, servers):
        super().__init__(daemon=True)
        self.servers = servers
        self.max_writable = 0
        self.passes = 0
        self.stopping = False

    def run(self):
        conns = {}
        while not self.stopping:
            writable = []
            for s in self.servers:
                try:
                    if s.name not in conns:
                        conns[s.name] = connect(s.port, timeout=0.3)
                    cur = conns[s.name].cursor()
                    cur.execute("SELECT @@read_only")
                    if cur.fetchone()[0] == 0:
                        writable.append(s.name)
                except pymysql.MySQLError:
                    conns.pop(s.name, None)
            if len(writable) > self.max_writable:
                self.max_writable = len(writable)
                if len(writable) > 1:
                    print(f"  TWO WRITABLE: {writable}", file=sys.stderr)
            self.passes += 1
            time.sleep(0.02)


class Bench:
    def __init__(self, neco, policy):
        self.neco_bin = neco
        self.root = tempfile.mkdtemp(prefix="neco-mysql-bench-")
        self.servers = []
        self.agent = None
        self.policy = policy
        self.problems = []

    def setup(self):
        # The servers and the role section of the integration tests (mariadb_fixture.py):
        # m0 primary, m1 and m2 semi-sync replicas, users admin/repl/app, table t.x.
        self.servers = start_cluster(self.root)
        policy = {"anti_flap_window": "0s"}
        for kv in self.policy.split(","):
            if kv.strip():
                key, _, value = kv.partition(":")
                policy[key.strip()] = value.strip()
        self.agent = Agent(self.neco_bin, log_level="info")
        self.agent.set_modules(cluster_section(self.servers, self.root, policy, interval=None))
        self.agent.start()
        self.effective_config = self.agent.get_json("/config")[1]
        self.writer = Writer(self.servers)
        self.sampler = Sampler(self.servers)
        self.writer.start()
        self.sampler.start()

    def teardown(self):
        if self.agent:
            self.writer.stopping = True
            self.sampler.stopping = True
            self.agent.stop()
            self.agent.cleanup()
        for s in self.servers:
            s.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def status(self):
        r = subprocess.run([self.neco_bin, "mysql", "status", "c1", "--json", "--admin",
                            self.agent.admin], capture_output=True, text=True, timeout=10)
        return json.loads(r.stdout) if r.returncode == 0 else {}

    def wait_healthy(self, timeout=60):
        if not wait_for(lambda: (lambda s: s.get("state") == "healthy"
                                 and len(s.get("ready_replicas", [])) == 2)(self.status()),
                        timeout, 0.2):
            raise RuntimeError("cluster not healthy: " + json.dumps(self.status())
                               + "\n" + self.agent.output()[-3000:])
        return self.status()

    def server(self, name):
        return next(s for s in self.servers if s.name == name)

    def check_no_loss(self, primary, what):
        acks = self.writer.snapshot()
        conn = connect(self.server(primary).port)
        with conn:
            cur = conn.cursor()
            cur.execute("SELECT id FROM t.x")
            ids = {row[0] for row in cur.fetchall()}
        missing = [i for i, _, _ in acks if i not in ids]
        if missing:
            self.problems.append(f"{what}: {len(missing)} acknowledged ids missing on {primary}")
        if self.sampler.max_writable > 1:
            self.problems.append(f"{what}: two writable instances were seen")
        return len(acks), len(missing)

    def failovers(self, runs):
        times = []
        for run in range(runs):
            st = self.wait_healthy()
            old = st["primary"]
            # Some load on the primary before the fault.
            wait_for(lambda: sum(1 for _, _, n in self.writer.snapshot() if n == old) > 100, 10)
            killed_at = time.monotonic()
            self.server(old).kill()
            if not wait_for(lambda: self.writer.first_after(killed_at, old) is not None, 60, 0.01):
                raise RuntimeError(f"run {run + 1}: no write accepted after the kill\n"
                                   + self.agent.output()[-3000:])
            _, at, new = self.writer.first_after(killed_at, old)
            times.append(at - killed_at)
            wait_for(lambda: self.status().get("primary") == new, 10, 0.1)
            acked, missing = self.check_no_loss(new, f"failover run {run + 1}")
            print(f"  failover {run + 1}: {old} -> {new} in {at - killed_at:.3f} s "
                  f"({acked} acknowledged so far, {missing} missing)", file=sys.stderr)
            self.server(old).start()  # boots fenced; the agent rejoins it
        return times

    def switchovers(self, runs):
        blocks, durations = [], []
        for run in range(runs):
            st = self.wait_healthy()
            old = st["primary"]
            wait_for(lambda: sum(1 for _, _, n in self.writer.snapshot() if n == old) > 100, 10)
            started = time.monotonic()
            r = subprocess.run([self.neco_bin, "mysql", "switchover", "c1", "--admin",
                                self.agent.admin], capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise RuntimeError(f"switchover refused: {r.stderr}")
            if not wait_for(lambda: self.writer.first_after(started, old) is not None, 30, 0.01):
                raise RuntimeError(f"switchover run {run + 1}: no write accepted afterwards\n"
                                   + self.agent.output()[-3000:])
            first_id, first_at, new = self.writer.first_after(started, old)
            last_old = max((at for i, at, n in self.writer.snapshot()
                            if n == old and i < first_id), default=started)
            wait_for(lambda: (lambda s: s.get("primary") == new
                              and s.get("state") in ("healthy", "degraded"))(self.status()),
                     30, 0.05)
            done = time.monotonic()
            blocks.append(first_at - last_old)
            durations.append(done - started)
            acked, missing = self.check_no_loss(new, f"switchover run {run + 1}")
            print(f"  switchover {run + 1}: {old} -> {new}: writes blocked "
                  f"{first_at - last_old:.3f} s, done after {done - started:.3f} s "
                  f"({acked} acknowledged so far, {missing} missing)", file=sys.stderr)
        return blocks, durations


def summary(name, values):
    return (f"{name}: median {statistics.median(values):.3f} s, max {max(values):.3f} s, "
            f"min {min(values):.3f} s over {len(values)} runs")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("neco")
    p.add_argument("what", nargs="?", default="all", choices=["failover", "switchover", "all"])
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--policy", default="", help="extra policy lines, comma-separated")
    a = p.parse_args()
    if not available():
        print("mariadbd, mariadb-install-db or the mariadb client not found (Debian package "
              "mariadb-server)",
              file=sys.stderr)
        return 2
    bench = Bench(os.path.abspath(a.neco), a.policy)
    try:
        bench.setup()
        cfg = bench.effective_config.get("config", {}).get("modules", {}).get("mysql", {})
        pol = (cfg.get("clusters") or [{}])[0].get("policy", {})
        print(f"policy: interval {cfg.get('interval')}, " + ", ".join(
            f"{k} {v}" for k, v in sorted(pol.items())), file=sys.stderr)
        results = {}
        if a.what in ("failover", "all"):
            t = bench.failovers(a.runs)
            results["failover"] = t
            print(summary("failover (kill -9 -> first acknowledged write on the new primary)", t))
        if a.what in ("switchover", "all"):
            b, d = bench.switchovers(a.runs)
            results["switchover_block"] = b
            print(summary("switchover write block", b))
            print(summary("switchover command -> settled", d))
        print(f"acknowledged writes: {len(bench.writer.snapshot())}, sampler passes: "
              f"{bench.sampler.passes}, most writable at once: {bench.sampler.max_writable}")
        for problem in bench.problems:
            print("PROBLEM: " + problem)
        return 1 if bench.problems else 0
    finally:
        bench.teardown()


if __name__ == "__main__":
    sys.exit(main())
