"""The mysql module end to end: three real mariadbd instances (one primary, two semi-sync
replicas) started here, one controller agent (SQLite store) managing them. Checks that
`neco mysql status --json` shows the cluster healthy; that after kill -9 of the primary the
agent fails over (the new primary is writable, status names it, failovers_total is 1) and how
long that took; that the old primary, restarted, is rejoined and `neco mysql switchover --to`
brings the role back; that after `neco mysql stop-clustering` a killed primary is NOT replaced
until `start-clustering`; that the next automatic failover waits out anti_flap_window until
an operator acts; that a restarted agent goes on from the memory in the store; and that `neco config check` refuses a cluster with two primaries,
naming the field. Skips (77) without mariadbd. Usage: test_mysql.py NECO_BINARY."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from neco_harness import Agent, free_port, http, wait_for  # noqa: E402

NECO = None
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
MARIADBD = shutil.which("mariadbd", path=SBIN)
INSTALL_DB = shutil.which("mariadb-install-db", path=SBIN)
CLIENT = shutil.which("mariadb", path=SBIN)
SMALL = ["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=4M"]
NAMES = ["m0", "m1", "m2"]


def my_cnf(server_id, port, sock, datadir):
    # What modules/mysql/server_config.cpp renders (fenced boot, GTID strict, semi-sync).
    return f"""[mariadbd]
server_id = {server_id}
port = {port}
bind_address = 127.0.0.1
socket = {sock}
datadir = {datadir}
gtid_domain_id = 0
gtid_strict_mode = ON
log_bin = mysql-bin
log_bin_index = mysql-bin.index
relay_log = relay-bin
relay_log_index = relay-bin.index
log_slave_updates = ON
binlog_format = ROW
sync_binlog = 1
innodb_flush_log_at_trx_commit = 1
read_only = ON
skip_slave_start = ON
relay_log_recovery = ON
init_rpl_role = SLAVE
rpl_semi_sync_master_enabled = OFF
rpl_semi_sync_slave_enabled = ON
rpl_semi_sync_master_wait_point = AFTER_SYNC
rpl_semi_sync_master_timeout = 18446744073709551615
rpl_semi_sync_master_wait_no_slave = ON
slave_net_timeout = 4
"""


class Server:
    def __init__(self, root, index):
        self.name = NAMES[index]
        self.dir = os.path.join(root, self.name)
        self.sock = os.path.join(self.dir, "mariadbd.sock")
        self.port = free_port()
        self.server_id = index + 1
        self.proc = None

    def start(self):
        log = open(os.path.join(self.dir, "error.log"), "ab")
        self.proc = subprocess.Popen(
            [MARIADBD, "--defaults-file=" + os.path.join(self.dir, "my.cnf"), "--user=root",
             "--skip-name-resolve", "--pid-file=" + os.path.join(self.dir, "mariadbd.pid")]
            + SMALL, stdout=log, stderr=log)
        log.close()
        if not wait_for(lambda: self.sql("SELECT 1", check=False).returncode == 0, timeout=30,
                        interval=0.1):
            raise RuntimeError(f"mariadbd {self.name} did not start:\n" + self.error_log())

    def error_log(self):
        with open(os.path.join(self.dir, "error.log"), errors="replace") as f:
            return f.read()[-3000:]

    def sql(self, statement, check=True):
        r = subprocess.run([CLIENT, "--no-defaults", "-uroot", "-S", self.sock, "-N", "-B",
                            "--connect-timeout=2", "-e", statement],
                           capture_output=True, text=True, timeout=20)
        if check and r.returncode != 0:
            raise RuntimeError(f"{self.name}: {statement}: {r.stderr}")
        return r

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def change_master(primary):
    return (f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, "
            "MASTER_USER='repl', MASTER_PASSWORD='replpw', MASTER_CONNECT_RETRY=1, "
            "MASTER_HEARTBEAT_PERIOD=1, MASTER_USE_GTID=slave_pos")


class MysqlModule(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="neco-mysql-it-")
        cls.servers = []
        cls.agent = None
        try:
            cls.start_servers()
            cls.start_agent()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def start_servers(cls):
        seed = os.path.join(cls.root, "seed")
        r = subprocess.run([INSTALL_DB, "--no-defaults", "--datadir=" + seed,
                            "--auth-root-authentication-method=normal", "--skip-test-db",
                            "--user=root"] + SMALL, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError("mariadb-install-db failed:\n" + r.stdout + r.stderr)
        for i in range(3):
            s = Server(cls.root, i)
            shutil.copytree(seed, os.path.join(s.dir, "data"))
            with open(os.path.join(s.dir, "my.cnf"), "w") as f:
                f.write(my_cnf(s.server_id, s.port, s.sock, os.path.join(s.dir, "data")))
            cls.servers.append(s)
        for s in cls.servers:
            s.start()
            s.sql("SET SESSION sql_log_bin = 0; "
                  "CREATE USER 'admin'@'127.0.0.1' IDENTIFIED BY 'adminpw'; "
                  "GRANT ALL PRIVILEGES ON *.* TO 'admin'@'127.0.0.1' WITH GRANT OPTION; "
                  "CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'replpw'; "
                  "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'")
        primary = cls.servers[0]
        # Semi-sync master on before the replicas connect, so they register as semi-sync.
        primary.sql("SET GLOBAL rpl_semi_sync_master_enabled = ON; SET GLOBAL read_only = OFF")
        for s in cls.servers[1:]:
            s.sql(change_master(primary) + "; START SLAVE")
        ok = wait_for(lambda: primary.sql("SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'")
                      .stdout.split()[1] == "2", timeout=20, interval=0.1)
        if not ok:
            raise RuntimeError("the replicas did not connect to the primary")
        primary.sql("CREATE DATABASE t; CREATE TABLE t.x (id INT PRIMARY KEY AUTO_INCREMENT, "
                    "v VARCHAR(16))")
        primary.sql("INSERT INTO t.x (v) VALUES ('first')")

    @classmethod
    def section(cls, second_primary=False):
        cred = cls.root
        for name, pw in (("admin.pw", "adminpw\n"), ("repl.pw", "replpw\n")):
            with open(os.path.join(cred, name), "w") as f:
                f.write(pw)
        inst = ""
        for i, s in enumerate(cls.servers):
            primary = "true" if i == 0 or (second_primary and i == 1) else "false"
            inst += (f"          - {{name: {s.name}, host: 127.0.0.1, port: {s.port}, "
                     f"primary: {primary}}}\n")
        return f"""modules:
  mysql:
    interval: 300ms
    clusters:
      - name: c1
        instances:
{inst}        credentials:
          admin_user: admin
          admin_password_file: {cred}/admin.pw
          repl_user: repl
          repl_password_file: {cred}/repl.pw
        policy:
          replica_silence: 2s
          failure_confirm: 1s
          kill_grace: 200ms
          anti_flap_window: 10m
"""

    @classmethod
    def start_agent(cls):
        cls.agent = Agent(NECO)
        cls.agent.set_modules(cls.section())
        cls.agent.start()

    @classmethod
    def tearDownClass(cls):
        if cls.agent:
            cls.agent.stop()
            cls.agent.cleanup()
        for s in cls.servers:
            s.stop()
        shutil.rmtree(cls.root, ignore_errors=True)

    def neco(self, *args, check=True):
        r = subprocess.run([NECO, *args, "--admin", self.agent.admin], capture_output=True,
                           text=True, timeout=30)
        if check and r.returncode != 0:
            self.fail(f"neco {' '.join(args)} failed ({r.returncode}): {r.stderr}\n"
                      + self.agent.output()[-4000:])
        return r

    def status(self):
        return json.loads(self.neco("mysql", "status", "c1", "--json").stdout)

    def wait_status(self, condition, timeout, what):
        last = {}

        def check():
            nonlocal last
            last = self.status()
            return condition(last)
        if not wait_for(check, timeout=timeout, interval=0.2):
            self.fail(f"{what}: last status {json.dumps(last)}\n" + self.agent.output()[-4000:])
        return last

    def server(self, name):
        return next(s for s in self.servers if s.name == name)

    def writable(self, name):
        r = self.server(name).sql("SELECT @@read_only", check=False)
        return r.returncode == 0 and r.stdout.strip() == "0"

    def metric(self, name, labels):
        _, _, body = http("GET", self.agent.metrics + "/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        return None

    def test_1_healthy(self):
        st = self.wait_status(lambda s: s.get("state") == "healthy", 15, "never healthy")
        self.assertEqual(st["primary"], "m0")
        self.assertEqual(sorted(st["ready_replicas"]), ["m1", "m2"])
        self.assertEqual(st["errant_replicas"], [])
        table = self.neco("mysql", "status").stdout
        self.assertIn("c1", table)
        self.assertIn("healthy", table)
        self.assertEqual(self.metric("neco_mysql_cluster_state",
                                     {"cluster": "c1", "state": "healthy"}), 1.0)

    def test_2_failover(self):
        self.server("m0").kill()
        start = time.monotonic()
        st = self.wait_status(lambda s: s.get("primary") in ("m1", "m2")
                              and s.get("state") in ("healthy", "degraded"), 30, "no failover")
        elapsed = time.monotonic() - start
        print(f"\nfailover through the agent: {elapsed:.2f} s (to {st['primary']})",
              file=sys.stderr)
        new = st["primary"]
        self.assertTrue(wait_for(lambda: self.writable(new), timeout=5))
        self.server(new).sql("INSERT INTO t.x (v) VALUES ('after failover')")
        self.assertEqual(self.metric("neco_mysql_failovers_total", {"cluster": "c1"}), 1.0)
        self.assertEqual(self.metric("neco_mysql_primary_info",
                                     {"cluster": "c1", "instance": new}), 1.0)
        MysqlModule.failover_primary = new

    def test_3_switchover_back(self):
        old = self.server("m0")
        old.start()  # boots fenced (read_only, no replication); the agent rejoins it
        self.wait_status(lambda s: "m0" in s.get("ready_replicas", []), 30, "m0 not rejoined")
        self.neco("mysql", "switchover", "c1", "--to", "m0")
        self.wait_status(lambda s: s.get("primary") == "m0" and s.get("state") == "healthy", 30,
                         "no switchover back to m0")
        self.assertTrue(self.writable("m0"))
        self.assertEqual(self.metric("neco_mysql_switchovers_total", {"cluster": "c1"}), 1.0)

    def test_4_paused_no_failover(self):
        self.neco("mysql", "stop-clustering", "c1")
        self.assertTrue(self.status()["paused"])
        self.server("m0").kill()
        # Well past replica_silence + failure_confirm: an active loop would have failed over.
        time.sleep(7)
        st = self.status()
        self.assertEqual(st["primary"], "m0", json.dumps(st))
        self.assertNotIn(st["state"], ("healthy",))
        self.assertFalse(self.writable("m1"))
        self.assertFalse(self.writable("m2"))
        self.assertEqual(self.metric("neco_mysql_failovers_total", {"cluster": "c1"}), 1.0)
        # Resumed (which also clears the anti-flap wait), it fails over.
        self.neco("mysql", "start-clustering", "c1")
        st = self.wait_status(lambda s: s.get("primary") in ("m1", "m2"), 30,
                              "no failover after start-clustering")
        self.assertEqual(self.metric("neco_mysql_failovers_total", {"cluster": "c1"}), 2.0)
        MysqlModule.failover_primary = st["primary"]

    def test_5_anti_flap(self):
        # The failover just done was automatic: within anti_flap_window (10m) the next waits.
        first = MysqlModule.failover_primary
        other = "m2" if first == "m1" else "m1"
        self.wait_status(lambda s: other in s.get("ready_replicas", []), 20, "no ready replica")
        self.server(first).kill()
        st = self.wait_status(
            lambda s: "anti-flap" in str((s.get("last_operation") or {}).get("error")), 20,
            "the anti-flap wait was not reported")
        self.assertEqual(st["primary"], first)
        self.assertFalse(self.writable(other))
        # An operator's start-clustering clears the wait.
        self.neco("mysql", "start-clustering", "c1")
        st = self.wait_status(lambda s: s.get("primary") == other, 30,
                              "no failover after the wait was cleared")
        self.assertTrue(wait_for(lambda: self.writable(other), timeout=5))
        MysqlModule.failover_primary = other

    def test_6_memory_survives_restart(self):
        # The new leader (the same agent, restarted) loads the memory from the store: the
        # primary is the one failed over to, not the declared m0, and the counters go on.
        before = self.status()
        self.agent.stop()
        self.agent.start()
        st = self.wait_status(lambda s: s.get("leader") is True
                              and s.get("primary") == MysqlModule.failover_primary, 30,
                              "the memory was not loaded")
        self.assertEqual(st["failovers"], before["failovers"])
        self.assertEqual(st["switchovers"], before["switchovers"])

    def test_7_config_check_two_primaries(self):
        bad = Agent(NECO)
        try:
            bad.set_modules(self.section(second_primary=True))
            r = subprocess.run([NECO, "config", "check", bad.role], capture_output=True,
                               text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("modules.mysql.clusters[0]", r.stdout + r.stderr)
            self.assertIn("primar", r.stdout + r.stderr)
        finally:
            bad.cleanup()


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: test_mysql.py NECO_BINARY", file=sys.stderr)
        sys.exit(2)
    NECO = os.path.abspath(sys.argv.pop(1))
    if not (MARIADBD and INSTALL_DB and CLIENT):
        print("SKIP: mariadbd, mariadb-install-db or the mariadb client not found (Debian "
              "package mariadb-server)", file=sys.stderr)
        sys.exit(77)
    unittest.main(verbosity=2, failfast=True)
