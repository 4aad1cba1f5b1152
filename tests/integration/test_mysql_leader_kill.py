"""The mysql module's failover survives the death of the controller running it: three real
mariadbd instances (mariadb_fixture), one real etcd, two controller agents campaigning on it.

Each round arms one failpoint (NECO_FAILPOINTS, agent/util/failpoint.hpp) on the leader only,
kills -9 the primary mariadbd, and checks that the leader reached the failpoint (it died by
SIGKILL), that the other controller took over and finished the failover (the new primary is
writable, the state healthy or degraded, exactly one more failover counted), and that every id
a client had acknowledged is on the new primary. The old primary is then restarted (the agent
fences and rejoins it) and the next round arms its failpoint on whichever controller it makes
leader. Rounds: after fence_replicas_io, before promote, after promote, after repoint, after
wait_relay_apply (the replicas' SQL threads held back by a table lock so that it happens).
Then two failovers back to back with both controllers healthy (anti_flap_window 0s). And an
agent whose NECO_FAILPOINTS is malformed refuses to start, naming the entry.

Throughout, a writer thread inserts increasing ids as an application user (read_only stops it)
into whichever instance takes them, recording each acknowledged id, and a sampler checks that
never more than one instance has read_only = 0. Skips (77) without etcd or mariadbd.
Usage: test_mysql_leader_kill.py NECO_BINARY."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mariadb_fixture import CLIENT, available, cluster_section, start_cluster  # noqa: E402
from neco_harness import Agent, free_port, http, role_text, wait_for  # noqa: E402

NECO = None
ETCD = shutil.which("etcd")
ELECTION_TTL = "2s"
# relay_apply_timeout outlasts HOLD_APPLY_S, so the held-back candidate's first wait succeeds
# (the after.wait_relay_apply failpoint fires on success only) however fast detection is.
POLICY = {"replica_silence": "2s", "failure_confirm": "500ms", "kill_grace": "200ms",
          "anti_flap_window": "0s", "relay_apply_timeout": "15s"}
# Where the leader dies mid-failover. wait_relay_apply happens only when the candidate has
# received more than it applied: for that round the replicas' SQL threads are held back (a
# table lock on t.x) while the primary still gets acknowledged writes, and then killed.
ROUNDS = ["mysql.after.fence_replicas_io", "mysql.before.promote", "mysql.after.promote",
          "mysql.after.repoint", "mysql.after.wait_relay_apply"]
HOLD_APPLY_S = 6


class Etcd:
    """One etcd member on free loopback ports."""

    def __init__(self, root):
        self.dir = os.path.join(root, "etcd")
        self.client = free_port()
        self.peer = free_port()
        self.proc = None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.client}"

    def start(self):
        log = open(self.dir + ".log", "ab")
        self.proc = subprocess.Popen(
            [ETCD, "--name", "e0", "--data-dir", self.dir,
             "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
             "--listen-peer-urls", f"http://127.0.0.1:{self.peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer}",
             "--initial-cluster", f"e0=http://127.0.0.1:{self.peer}",
             "--heartbeat-interval", "50", "--election-timeout", "500"],
            stdout=log, stderr=log)
        log.close()
        if not wait_for(lambda: http("GET", self.endpoint + "/health", timeout=1)[0] == 200,
                        timeout=30, interval=0.1):
            raise RuntimeError("etcd did not become healthy")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def controller(name, etcd, section):
    """An Agent whose role file makes it a controller named `name` on `etcd`."""
    a = Agent(NECO)
    a.env.pop("NECO_FAILPOINTS", None)
    role = role_text(a.state, a.admin_port, a.metrics_port, cluster_port=a.cluster_port)
    store = (f"store:\n  backend: etcd\n  etcd:\n    endpoints: [{etcd.endpoint}]\n"
             f"    request_timeout: 2s\n    dial_timeout: 500ms\n  election_ttl: {ELECTION_TTL}\n")
    old_store = "store:\n  election_ttl: 2s\n"
    if old_store not in role or "name: itest-node\n" not in role:
        raise RuntimeError("neco_harness.role_text changed shape; update controller()")
    role = role.replace(old_store, store).replace("name: itest-node\n", f"name: {name}\n")
    with open(a.role, "w") as f:
        f.write(role)
    a.set_modules(section)
    a.name = name
    return a


class Writer(threading.Thread):
    """Inserts increasing ids as `app` into whichever instance accepts them; `acked` holds the
    ids whose INSERT returned success. A failed INSERT's id is never reused (it may have
    committed without the answer arriving)."""

    def __init__(self, servers):
        super().__init__(daemon=True)
        self.servers = servers
        self.acked = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.next_id = 1000
        self.target = 0

    def insert(self, server, id_):
        r = subprocess.run([CLIENT, "--no-defaults", "-h127.0.0.1", f"-P{server.port}",
                            "-uapp", "-papppw", "--connect-timeout=1", "-N", "-B", "-e",
                            f"INSERT INTO t.x (id, v) VALUES ({id_}, 'w')"],
                           capture_output=True, text=True, timeout=60)
        return r.returncode == 0

    def run(self):
        while not self.stopping.is_set():
            done = False
            for k in range(len(self.servers)):
                i = (self.target + k) % len(self.servers)
                if not self.servers[i].running():
                    continue
                id_ = self.next_id
                self.next_id += 1
                try:
                    ok = self.insert(self.servers[i], id_)
                except subprocess.TimeoutExpired:
                    ok = False
                if ok:
                    with self.lock:
                        self.acked.append(id_)
                    self.target = i
                    done = True
                    break
            if not done:
                self.stopping.wait(0.1)  # nobody writable right now (failover in progress)

    def snapshot(self):
        with self.lock:
            return list(self.acked)


class Sampler(threading.Thread):
    """Reads @@read_only of every running instance every 0.2 s; `violations` lists the samples
    where more than one instance was writable."""

    def __init__(self, servers):
        super().__init__(daemon=True)
        self.servers = servers
        self.samples = 0
        self.violations = []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            writable = []
            for s in self.servers:
                if not s.running():
                    continue
                r = s.sql("SELECT @@read_only", check=False)
                if r.returncode == 0 and r.stdout.strip() == "0":
                    writable.append(s.name)
            self.samples += 1
            if len(writable) > 1:
                self.violations.append((time.monotonic(), writable))
            self.stopping.wait(0.2)


class MysqlLeaderKill(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="neco-mysql-lk-")
        cls.servers, cls.agents, cls.etcd = [], [], None
        cls.writer = cls.sampler = None
        try:
            try:
                cls.servers = start_cluster(cls.root)
            except Exception as e:
                cls.servers = getattr(e, "servers", [])
                raise
            cls.etcd = Etcd(cls.root)
            cls.etcd.start()
            section = cluster_section(cls.servers, cls.root, POLICY)
            cls.agents = [controller("ctl-a", cls.etcd, section),
                          controller("ctl-b", cls.etcd, section)]
            cls.writer = Writer(cls.servers)
            cls.sampler = Sampler(cls.servers)
            cls.writer.start()
            cls.sampler.start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        for t in (cls.writer, cls.sampler):
            if t:
                t.stopping.set()
        for a in cls.agents:
            a.stop()
        for t in (cls.writer, cls.sampler):
            if t and t.is_alive():
                t.join(timeout=70)
        for a in cls.agents:
            a.cleanup()
        for s in cls.servers:
            s.stop()
        if cls.etcd:
            cls.etcd.stop()
        shutil.rmtree(cls.root, ignore_errors=True)

    # ---- helpers ----
    def logs(self):
        return "".join(f"\n--- {a.name} log (tail) ---\n{a.output()[-3000:]}" for a in self.agents)

    def status(self, agent):
        if agent.proc is None or agent.proc.poll() is not None:
            return {}
        code, _, body = agent.get("/v1/mysql/clusters/c1")
        return json.loads(body) if code == 200 else {}

    def wait_status(self, agent, condition, timeout, what):
        last = {}

        def check():
            nonlocal last
            last = self.status(agent)
            return bool(last) and condition(last)
        if not wait_for(check, timeout=timeout, interval=0.2):
            self.fail(f"{what} ({agent.name}): last status {json.dumps(last)}" + self.logs())
        return last

    def server(self, name):
        return next(s for s in self.servers if s.name == name)

    def writable(self, name):
        r = self.server(name).sql("SELECT @@read_only", check=False)
        return r.returncode == 0 and r.stdout.strip() == "0"

    def ids_on(self, name):
        r = self.server(name).sql("SELECT id FROM t.x")
        return {int(v) for v in r.stdout.split()}

    def healthy_all(self, s):
        return (s.get("leader") is True and s.get("state") == "healthy"
                and len(s.get("ready_replicas", [])) == len(self.servers) - 1)

    def lead_with(self, leader, follower, failpoint):
        """Restarts both controllers so that `leader` (armed with `failpoint`, or nothing)
        leads and `follower` (never armed) stands by; returns the leader's status once it
        reports the whole cluster healthy."""
        for a in (leader, follower):
            a.stop()
        if failpoint:
            leader.env["NECO_FAILPOINTS"] = f"{failpoint}=kill"
        else:
            leader.env.pop("NECO_FAILPOINTS", None)
        follower.env.pop("NECO_FAILPOINTS", None)
        leader.start()
        st = self.wait_status(leader, self.healthy_all, 30, "the armed controller never led a "
                              "healthy cluster")
        follower.start()
        self.wait_status(follower, lambda s: s.get("leader") is False, 15,
                         "the standby controller did not come up as a follower")
        return st

    def check_writes(self, primary, label):
        acked = self.writer.snapshot()
        present = self.ids_on(primary)
        lost = [i for i in acked if i not in present]
        self.assertEqual(lost, [], f"{label}: acknowledged ids missing on {primary}")
        self.assertEqual(self.sampler.violations, [], f"{label}: two writable instances")
        return len(acked)

    def wait_new_primary(self, agent, old, failovers, label):
        """Waits until `agent` leads with a primary other than `old`, writable, the state
        healthy or degraded and `failovers` counted; returns the status."""
        st = self.wait_status(
            agent, lambda s: s.get("leader") is True and s.get("primary") not in ("", old)
            and s.get("state") in ("healthy", "degraded") and s.get("failovers") == failovers,
            45, f"{label}: the failover was not finished")
        new = st["primary"]
        self.assertTrue(wait_for(lambda: self.writable(new), timeout=10),
                        f"{label}: {new} is not writable")
        return st

    def rejoin(self, agent, name):
        self.server(name).start()  # boots fenced; the agent rejoins it
        self.wait_status(agent, self.healthy_all, 45, f"{name} was not rejoined")

    def hold_apply(self, replicas):
        """Blocks the SQL thread of each replica for HOLD_APPLY_S seconds (a session holding
        a write lock on t.x); returns the sessions' processes once every lock is held."""
        holders = []
        for s in replicas:
            holders.append(subprocess.Popen(
                [CLIENT, "--no-defaults", "-uroot", "-S", s.sock, "-N", "-B", "-e",
                 f"LOCK TABLES t.x WRITE; SELECT SLEEP({HOLD_APPLY_S}); UNLOCK TABLES"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            held = wait_for(lambda: s.sql(
                "SELECT COUNT(*) FROM information_schema.processlist "
                "WHERE info LIKE 'SELECT SLEEP%'").stdout.strip() == "1", timeout=5)
            self.assertTrue(held, f"the lock on {s.name} was not taken")
        return holders

    def ops_since(self, agent, offset):
        """The operations `agent` logged as done after byte `offset` of its log."""
        return re.findall(r"cluster c1: (\w+)\b[^\n]* done in", agent.output()[offset:])

    def wait_acked_growth(self, label):
        before = len(self.writer.snapshot())
        self.assertTrue(wait_for(lambda: len(self.writer.snapshot()) > before + 2, timeout=30),
                        f"{label}: the writer made no progress" + self.logs())

    # ---- tests ----
    def test_0_malformed_failpoints_refuse_the_start(self):
        env = dict(self.agents[0].env, NECO_FAILPOINTS="mysql.after.promote=kill,mysql.x=boom")
        r = subprocess.run([NECO, "agent", "--role", self.agents[0].role], env=env,
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('NECO_FAILPOINTS: entry "mysql.x=boom": unknown action', r.stderr)

    def test_1_leader_killed_mid_failover(self):
        for n, failpoint in enumerate(ROUNDS):
            label = f"round {n + 1} ({failpoint})"
            armed, standby = self.agents[n % 2], self.agents[(n + 1) % 2]
            st = self.lead_with(armed, standby, failpoint)
            old = st["primary"]
            failovers = st["failovers"]
            self.assertEqual(failovers, n, f"{label}: a redo counted a failover twice")
            holders = []
            if failpoint.endswith(".wait_relay_apply"):
                holders = self.hold_apply([x for x in self.servers if x.name != old])
            self.wait_acked_growth(label)
            offset = len(standby.output())
            start = time.monotonic()
            self.server(old).kill()
            try:
                code = armed.proc.wait(timeout=45)
            except subprocess.TimeoutExpired:
                self.fail(f"{label}: the leader never reached the failpoint" + self.logs())
            self.assertEqual(code, -9, f"{label}: the leader died otherwise" + self.logs())
            self.assertIn(f"failpoint {failpoint} reached", armed.output())
            st = self.wait_new_primary(standby, old, failovers + 1, label)
            elapsed = time.monotonic() - start
            self.wait_acked_growth(label)
            count = self.check_writes(st["primary"], label)
            for h in holders:
                h.wait(timeout=HOLD_APPLY_S + 10)
            ops = ", ".join(self.ops_since(standby, offset)) or "no operation left"
            print(f"\n{label}: {armed.name} died at the failpoint; {standby.name} finished "
                  f"({ops}); {old} -> {st['primary']} "
                  f"writable {elapsed:.2f} s after the kill; {count} writes acknowledged, "
                  "none lost", file=sys.stderr)
            self.rejoin(standby, old)
        st = self.status(self.agents[len(ROUNDS) % 2])
        self.assertEqual(st.get("failovers"), len(ROUNDS), "a redo counted a failover twice")

    def test_2_back_to_back_failovers(self):
        a, b = self.agents
        st = self.lead_with(a, b, None)
        failovers = st["failovers"]
        for k in range(2):
            label = f"back-to-back failover {k + 1}"
            old = st["primary"]
            self.wait_acked_growth(label)
            start = time.monotonic()
            self.server(old).kill()
            failovers += 1
            st = self.wait_new_primary(a, old, failovers, label)
            elapsed = time.monotonic() - start
            if k == 0:
                self.wait_acked_growth(label)  # the new primary takes writes: settled
            count = self.check_writes(st["primary"], label)
            print(f"\n{label}: {old} -> {st['primary']} writable {elapsed:.2f} s after the "
                  f"kill; {count} writes acknowledged, none lost", file=sys.stderr)
        # Only the last primary is left: restart the other two; both are rejoined, and the
        # writer (its INSERTs wait for a semi-sync ack) goes on.
        for s in self.servers:
            if not s.running():
                s.start()
        self.wait_status(a, self.healthy_all, 45, "the killed instances were not rejoined")
        self.wait_acked_growth("after the rejoin")
        count = self.check_writes(st["primary"], "end")
        print(f"\nend: {count} writes acknowledged, none lost; {self.sampler.samples} samples, "
              "never two writable", file=sys.stderr)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: test_mysql_leader_kill.py NECO_BINARY", file=sys.stderr)
        sys.exit(2)
    NECO = os.path.abspath(sys.argv.pop(1))
    if not available():
        print("SKIP: mariadbd, mariadb-install-db or the mariadb client not found (Debian "
              "package mariadb-server)", file=sys.stderr)
        sys.exit(77)
    if ETCD is None:
        print("SKIP: etcd not found (Debian package etcd-server)", file=sys.stderr)
        sys.exit(77)
    unittest.main(verbosity=2, failfast=True)
