"""The mysql module's node side (modules.mysql.local) with the real agent and a real mariadbd,
both ways it can be configured.

start: true, initialize: true -- the agent initializes the empty data directory, starts
mariadbd detached and GET /v1/mysql/local shows it up and read_only; after kill -9 the agent
starts it again (restarts 1, still read_only); a stopped agent leaves mariadbd running; a new
agent adopts it through its pid file (same pid, nothing started, no second mariadbd).

start: false, on a plain node (controller: false) -- the agent only writes the option file; the test starts mariadbd with
--defaults-file= that file and the agent reports it healthy; once mariadbd stops the module is
degraded with a reason, in /v1/mysql/local and in /status.

Skips (77) without mariadbd. Usage: test_mysql_local.py NECO_BINARY."""

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
SMALL = ["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=4M"]


def proc_state(pid):
    """The process state letter ('S', 'R', 'Z', ...), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def running(pid):
    return proc_state(pid) not in (None, "Z", "X")


def mariadbd_pids(datadir):
    """Live mariadbd processes whose command line names `datadir`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                args = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if (args and os.path.basename(args[0]) == "mariadbd" and "--datadir=" + datadir in args
                and running(int(entry))):
            pids.append(int(entry))
    return pids


def stop_pid(pid, timeout=20):
    if not running(pid):
        return
    os.kill(pid, signal.SIGTERM)
    if not wait_for(lambda: not running(pid), timeout=timeout, interval=0.1):
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not running(pid), timeout=5, interval=0.1)


class LocalBase(unittest.TestCase):
    root = None
    agent = None

    @classmethod
    def paths(cls):
        cls.datadir = os.path.join(cls.root, "data")
        cls.socket = os.path.join(cls.root, "run", "mariadbd.sock")
        cls.option_file = os.path.join(cls.root, "etc", "mariadbd.cnf")
        cls.port = free_port()

    @classmethod
    def section(cls, extra):
        return f"""modules:
  mysql:
    local:
      server_id: 11
      port: {cls.port}
      datadir: {cls.datadir}
      socket: {cls.socket}
      option_file: {cls.option_file}
      os_user: root
      health_interval: 300ms
{extra}"""

    @classmethod
    def new_agent(cls, extra):
        agent = Agent(NECO)
        agent.set_modules(cls.section(extra))
        return agent

    def local(self):
        status, _, body = http("GET", self.agent.admin + "/v1/mysql/local")
        self.assertEqual(status, 200, body)
        return json.loads(body)

    def wait_local(self, condition, timeout, what):
        last = {}

        def check():
            nonlocal last
            last = self.local()
            return condition(last)

        if not wait_for(check, timeout=timeout, interval=0.2):
            self.fail(f"{what}: last /v1/mysql/local {last}\n" + self.agent.output()[-4000:])
        return last

    def metric(self, name):
        _, _, body = http("GET", self.agent.metrics + "/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return None

    def module_health(self):
        """/status as text (it carries each module's health and message)."""
        _, _, body = http("GET", self.agent.admin + "/status")
        return json.dumps(json.loads(body))


class AgentStartsMariadbd(LocalBase):
    """start: true, initialize: true."""

    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="neco-mysql-local-")
        cls.paths()
        cls.agent = cls.new_agent("      start: true\n      initialize: true\n")
        cls.agent.start()

    @classmethod
    def tearDownClass(cls):
        if cls.agent:
            cls.agent.stop()
            cls.agent.cleanup()
        for pid in mariadbd_pids(cls.datadir):
            stop_pid(pid)
        shutil.rmtree(cls.root, ignore_errors=True)

    def test_1_initializes_and_starts_fenced(self):
        st = self.wait_local(lambda s: s["up"], 120, "mariadbd never came up")
        self.assertTrue(st["healthy"], st)
        self.assertTrue(st["read_only"])
        self.assertEqual(st["server_id"], 11)
        self.assertFalse(st["adopted"])
        self.assertEqual(st["restarts"], 0)
        self.assertTrue(os.path.isdir(os.path.join(self.datadir, "mysql")))
        with open(self.option_file) as f:
            text = f.read()
        self.assertIn("init_rpl_role = SLAVE\n", text)
        self.assertIn(f"port = {self.port}\n", text)
        self.assertEqual(mariadbd_pids(self.datadir), [st["pid"]])
        self.assertEqual(self.metric("neco_mysql_local_up"), 1.0)
        self.assertEqual(self.metric("neco_mysql_local_read_only"), 1.0)
        AgentStartsMariadbd.first_pid = st["pid"]

    def test_2_restarts_a_killed_mariadbd(self):
        first = AgentStartsMariadbd.first_pid
        os.kill(first, signal.SIGKILL)
        st = self.wait_local(lambda s: s["up"] and s["pid"] not in (None, first), 60,
                             "mariadbd was not started again")
        self.assertEqual(st["restarts"], 1)
        self.assertTrue(st["read_only"])
        self.assertTrue(st["healthy"], st)
        self.assertEqual(self.metric("neco_mysql_local_restarts_total"), 1.0)
        self.assertIn("started mariadbd", self.agent.output())
        AgentStartsMariadbd.second_pid = st["pid"]

    def test_3_stopped_agent_leaves_mariadbd_running(self):
        pid = AgentStartsMariadbd.second_pid
        self.assertEqual(self.agent.stop(), 0)
        time.sleep(1)  # give a wrongly-attached mariadbd the time to go down with the agent
        self.assertTrue(running(pid), "mariadbd stopped with the agent")
        self.assertTrue(os.path.exists(self.socket))

    def test_4_new_agent_adopts_it(self):
        pid = AgentStartsMariadbd.second_pid
        self.agent.start()
        st = self.wait_local(lambda s: s["up"], 30, "the running mariadbd was not adopted")
        self.assertEqual(st["pid"], pid)
        self.assertTrue(st["adopted"])
        self.assertEqual(st["restarts"], 0)  # counted per agent process; nothing was started
        self.assertTrue(st["read_only"])
        time.sleep(1)  # a few more health checks: still the same single mariadbd
        self.assertEqual(mariadbd_pids(self.datadir), [pid])
        self.assertEqual(self.local()["pid"], pid)
        self.assertIn("adopted the running mariadbd", self.agent.output())


class AgentOnlyRendersTheOptionFile(LocalBase):
    """start: false: the operator (here the test) runs mariadbd."""

    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="neco-mysql-local-")
        cls.paths()
        cls.server = None
        # Twice at most, from an empty directory: seen failing once when other tests ran
        # mariadb-install-db at the same time (a bootstrap temp table in /tmp vanished).
        for attempt in range(2):
            shutil.rmtree(cls.datadir, ignore_errors=True)
            r = subprocess.run([INSTALL_DB, "--no-defaults", "--datadir=" + cls.datadir,
                                "--auth-root-authentication-method=socket", "--skip-test-db",
                                "--user=root"] + SMALL, capture_output=True, text=True,
                               timeout=120)
            if r.returncode == 0:
                break
        if r.returncode != 0:
            raise RuntimeError("mariadb-install-db failed:\n" + r.stdout + r.stderr)
        os.makedirs(os.path.dirname(cls.socket))
        cls.agent = cls.new_agent("      start: false\n")
        # A plain node (no controller, no store, no cluster API): the node side runs anyway.
        with open(cls.agent.role) as f:
            role = f.read()
        role = role.replace("controller: true\n", "controller: false\n")
        role = role.replace(f"cluster:\n  api:\n    port: {cls.agent.cluster_port}\n", "")
        role = role.replace("store:\n  election_ttl: 2s\n", "")
        with open(cls.agent.role, "w") as f:
            f.write(role)
        cls.agent.start()

    @classmethod
    def tearDownClass(cls):
        if cls.agent:
            cls.agent.stop()
            cls.agent.cleanup()
        if cls.server and cls.server.poll() is None:
            cls.server.terminate()
            try:
                cls.server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                cls.server.kill()
                cls.server.wait()
        shutil.rmtree(cls.root, ignore_errors=True)

    def test_1_renders_and_reports_not_running(self):
        self.assertIn('"controller": false', self.module_health())
        self.assertTrue(wait_for(lambda: os.path.exists(self.option_file), timeout=10))
        st = self.wait_local(lambda s: s["checked_at_ms"] > 0, 10, "no health check")
        self.assertFalse(st["up"])
        self.assertFalse(st["healthy"])
        self.assertIn("not running", st["problem"])
        self.assertIsNone(st["pid"])
        self.assertEqual(mariadbd_pids(self.datadir), [])  # the agent started nothing

    def test_2_healthy_once_the_operator_starts_it(self):
        log = open(os.path.join(self.root, "mariadbd.log"), "ab")
        AgentOnlyRendersTheOptionFile.server = subprocess.Popen(
            [MARIADBD, "--defaults-file=" + self.option_file, "--user=root"] + SMALL,
            stdout=log, stderr=log)
        log.close()
        st = self.wait_local(lambda s: s["healthy"], 60, "never healthy")
        self.assertTrue(st["up"])
        self.assertTrue(st["read_only"])
        self.assertEqual(st["server_id"], 11)
        self.assertFalse(st["managed_process"])
        self.assertNotIn("local mariadbd: ", self.module_health())
        self.assertEqual(self.metric("neco_mysql_local_up"), 1.0)

    def test_3_degraded_when_it_stops(self):
        server = AgentOnlyRendersTheOptionFile.server
        server.terminate()
        server.wait(timeout=30)
        st = self.wait_local(lambda s: not s["up"], 15, "still up after mariadbd stopped")
        self.assertFalse(st["healthy"])
        self.assertTrue("not running" in st["problem"] or "not reachable" in st["problem"],
                        st["problem"])
        self.assertTrue(wait_for(lambda: "local mariadbd: " in self.module_health(), timeout=5),
                        self.module_health())
        self.assertEqual(self.metric("neco_mysql_local_up"), 0.0)
        time.sleep(1)
        self.assertEqual(mariadbd_pids(self.datadir), [])  # start: false never starts it


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: test_mysql_local.py NECO_BINARY", file=sys.stderr)
        sys.exit(2)
    NECO = os.path.abspath(sys.argv.pop(1))
    if not (MARIADBD and INSTALL_DB):
        print("SKIP: mariadbd or mariadb-install-db not found (Debian package mariadb-server)",
              file=sys.stderr)
        sys.exit(77)
    unittest.main(verbosity=2, failfast=True)
