"""Integration tests: the real `neco` binary on loopback free ports, driven over HTTP, by
signals and through its CLI. Usage: test_agent.py NECO_BINARY [unittest args]."""

import gzip
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from neco_harness import Agent, free_port, http, wait_for  # noqa: E402

NECO = None


def run(*args, env=None, timeout=30):
    return subprocess.run([NECO, *args], capture_output=True, text=True, env=env, timeout=timeout)


class AgentCase(unittest.TestCase):
    def agent(self, **kw):
        a = Agent(NECO, **kw)
        self.addCleanup(a.cleanup)
        return a


class ConfigCheck(AgentCase):
    def check_error(self, extra_role_text, expected_position, expected_text):
        a = self.agent()
        with open(a.role, "a") as f:
            f.write(extra_role_text)
        r = run("config", "check", a.role)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"{a.role}:{expected_position}: ", r.stderr)
        self.assertIn(expected_text, r.stderr)
        # The agent refuses the same file before starting anything.
        r = run("agent", "--role", a.role)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{a.role}:{expected_position}: ", r.stderr)
        self.assertFalse(os.path.exists(a.state), "nothing may be created for a bad file")

    def test_unknown_key(self):
        self.check_error("lgo_level: debug\n", "18:1", "unknown key 'lgo_level'")

    def test_wrong_type(self):
        self.check_error("workers: many\n", "18:10", "workers: expected an integer")

    def test_bad_port(self):
        a = self.agent()
        with open(a.role, "w") as f:
            f.write("node:\n  name: n1\nadmin:\n  port: 70000\n")
        r = run("config", "check", a.role)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.strip(),
                         f"{a.role}:4:9: admin.port: 70000 is out of range 1..65535")

    def test_valid_files(self):
        a = self.agent()
        r = run("config", "check", a.role)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("OK (node 'itest-node', controller", r.stdout)
        src = os.environ.get("NECO_SOURCE_ROOT", "")
        for name in ("single-node", "controller", "node"):
            path = os.path.join(src, "config", "roles", name + ".yaml")
            r = run("config", "check", path)
            self.assertEqual(r.returncode, 0, f"{path}: {r.stderr}")
        r = run("config", "check", a.role, "--json")
        self.assertEqual(json.loads(r.stdout)["admin"]["port"], a.admin_port)

    def test_missing_file(self):
        r = run("config", "check", "/nonexistent/role.yaml")
        self.assertEqual(r.returncode, 1)
        self.assertIn("/nonexistent/role.yaml: cannot read the role file", r.stderr)


class Cli(AgentCase):
    def test_help_everywhere(self):
        for cmd in ("agent", "config", "status", "reload", "version"):
            r = run(cmd, "--help")
            self.assertEqual(r.returncode, 0, cmd)
            self.assertIn("Usage: neco " + cmd, r.stdout)
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("Commands:", r.stdout)
        r = run("frobnicate")
        self.assertEqual(r.returncode, 2)
        self.assertIn("unknown command 'frobnicate'", r.stderr)
        r = run("status", "--bogus")
        self.assertEqual(r.returncode, 2)

    def test_version(self):
        r = run("version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^neco \d+\.\d+\.\d+")
        self.assertIn("version", json.loads(run("version", "--json").stdout))

    def test_status_without_agent_says_what_to_do(self):
        port = free_port()
        r = run("status", "--admin", f"http://127.0.0.1:{port}")
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"agent not running at http://127.0.0.1:{port}", r.stderr)
        self.assertIn("neco agent --role", r.stderr)


class Serving(AgentCase):
    def test_endpoints_and_cli(self):
        a = self.agent().start()
        status, body = a.get_json("/healthz")
        self.assertEqual((status, body["status"]), (200, "ok"))
        self.assertTrue(wait_for(lambda: a.get_json("/status")[1]["role"] == "leader"))
        status, st = a.get_json("/status")
        self.assertEqual(st["node"], "itest-node")
        self.assertGreater(st["leader"]["term"], 0)
        self.assertTrue(st["leader"]["self"])
        self.assertGreaterEqual(st["uptime_seconds"], 0)
        self.assertEqual(a.get_json("/readyz"), (200, {"status": "ready"}))
        routes = {r["path"] for r in a.get_json("/help")[1]["routes"]}
        self.assertTrue({"/healthz", "/readyz", "/status", "/config", "/help"} <= routes)
        cfg = a.get_json("/config")[1]
        self.assertEqual(cfg["config"]["node"]["name"], "itest-node")
        # Errors are JSON with the right status; mutating routes refuse GET, others POST.
        status, headers, body = http("POST", a.admin + "/status", body=b"")
        self.assertEqual(status, 405)
        self.assertIn("GET", headers["Allow"])
        self.assertIn("error", json.loads(body))
        status, _, body = http("GET", a.admin + "/v1/agent/reload")
        self.assertEqual(status, 405)
        status, _, body = http("GET", a.admin + "/nope")
        self.assertEqual(status, 404)
        self.assertEqual(json.loads(body)["error"], "not_found")

        r = run("status", "--admin", a.admin)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("itest-node", r.stdout)
        self.assertIn("LEADER", r.stdout)
        r = run("status", "--json", "--admin", a.admin)
        self.assertEqual(json.loads(r.stdout)["node"], "itest-node")
        env = dict(os.environ, NECO_ADMIN=a.admin)
        self.assertEqual(run("status", env=env).returncode, 0)

        sock = os.path.join(a.state, "admin.sock")
        self.assertEqual(stat.S_IMODE(os.stat(sock).st_mode), 0o600)
        r = run("status", "--socket", sock)
        self.assertEqual(r.returncode, 0, r.stderr)

        self.assertEqual(a.stop(), 0)

    def test_metrics_formats(self):
        a = self.agent().start()
        status, headers, body = a.get("/metrics", base=a.metrics)
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain; version=0.0.4"))
        text = body.decode()
        for name in ("process_cpu_seconds_total", "process_resident_memory_bytes",
                     "process_open_fds", "process_start_time_seconds", "neco_build_info",
                     "neco_store_operation_duration_seconds_bucket", "neco_leader"):
            self.assertIn(name, text)
        promtool = shutil.which("promtool")
        if promtool:
            r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
            self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
        om = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        status, headers, body = a.get("/metrics", base=a.metrics, headers={"Accept": om})
        self.assertTrue(headers["Content-Type"].startswith("application/openmetrics-text"))
        self.assertTrue(body.decode().endswith("# EOF\n"))
        status, headers, body = a.get("/metrics", base=a.metrics,
                                      headers={"Accept-Encoding": "gzip"})
        self.assertEqual(headers["Content-Encoding"], "gzip")
        self.assertIn(b"process_open_fds", gzip.decompress(body))
        # The metrics listener is read-only and has nothing else.
        self.assertEqual(http("POST", a.metrics + "/metrics", body=b"x")[0], 405)
        self.assertEqual(a.get("/status", base=a.metrics)[0], 404)

    def test_slow_client_does_not_block_others(self):
        a = self.agent().start()
        slow = socket.create_connection(("127.0.0.1", a.admin_port))
        self.addCleanup(slow.close)
        slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finishes its header
        t0 = time.monotonic()
        for _ in range(20):
            self.assertEqual(a.get("/healthz")[0], 200)
        self.assertLess(time.monotonic() - t0, 2.0)
        big = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
        with socket.create_connection(("127.0.0.1", a.admin_port)) as s:
            s.sendall(big)
            self.assertIn(b" 431 ", s.recv(4096))
        with socket.create_connection(("127.0.0.1", a.admin_port)) as s:
            s.sendall(b"\x16\x03\x01garbage\r\n\r\n")
            self.assertIn(b" 400 ", s.recv(4096))
        self.assertEqual(a.get("/healthz")[0], 200)


class ProcessLife(AgentCase):
    def test_sighup_applies_good_and_rejects_bad(self):
        a = self.agent().start()
        a.write_role(log_level="debug")
        a.signal(signal.SIGHUP)
        self.assertTrue(wait_for(
            lambda: a.get_json("/config")[1]["config"]["log_level"] == "debug"))
        # A broken file: the agent keeps running the last good config and says why, precisely.
        a.write_role(log_level="warning", extra="bogus_key: 1\n")
        a.signal(signal.SIGHUP)
        self.assertTrue(wait_for(lambda: f"{a.role}:18:1: unknown key 'bogus_key'" in a.output()))
        self.assertEqual(a.get_json("/config")[1]["config"]["log_level"], "debug")
        self.assertEqual(a.get("/healthz")[0], 200)
        _, _, body = a.get("/metrics", base=a.metrics)
        self.assertIn(b'neco_config_reloads_total{result="failure"} 1', body)
        # A change only a restart can apply is refused the same way.
        a.write_role(admin_port=free_port())
        r = run("reload", "--admin", a.admin)
        self.assertEqual(r.returncode, 1)
        self.assertIn("'admin' changed; it only takes effect on restart", r.stderr)
        a.write_role(log_level="info")
        self.assertEqual(run("reload", "--admin", a.admin).returncode, 0)
        self.assertEqual(a.get_json("/config")[1]["config"]["log_level"], "info")
        self.assertEqual(a.stop(), 0)

    def test_sigterm_and_sigint_exit_zero_promptly(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            a = self.agent().start()
            t0 = time.monotonic()
            a.signal(sig)
            self.assertEqual(a.proc.wait(timeout=10), 0)
            self.assertLess(time.monotonic() - t0, 5.0)
            self.assertIn("Stopped", a.output())

    def test_systemd_notify_protocol(self):
        d = tempfile.mkdtemp(prefix="neco-notify-")
        self.addCleanup(shutil.rmtree, d, True)
        path = os.path.join(d, "notify.sock")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(path)
        s.settimeout(5)
        self.addCleanup(s.close)
        a = self.agent(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"}).start()

        def expect(prefix):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                msg = s.recv(4096).decode()
                if msg.startswith(prefix):
                    return msg
            self.fail("no " + prefix)

        expect("READY=1")
        expect("WATCHDOG=1")
        a.signal(signal.SIGHUP)
        self.assertIn("MONOTONIC_USEC=", expect("RELOADING=1"))
        expect("READY=1")
        a.signal(signal.SIGTERM)
        expect("STOPPING=1")
        self.assertEqual(a.proc.wait(timeout=10), 0)

    def test_journald_prefixes(self):
        a = self.agent()
        os.makedirs(a.dir, exist_ok=True)
        log = open(a.log_path, "wb")
        self.addCleanup(log.close)
        st = os.fstat(log.fileno())
        a.env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        a.start(stderr=log)
        a.stop()
        first = a.output().splitlines()[0]
        self.assertRegex(first, r"^<6>agent: ")
        b = self.agent().start()
        b.stop()
        self.assertRegex(b.output().splitlines()[0], r"^\d{4}-\d\d-\d\dT[\d:.]+Z info +agent: ")

    def test_second_agent_on_same_state_dir_is_refused(self):
        a = self.agent().start()
        b = self.agent()
        b.state = a.state
        b.write_role()
        r = run("agent", "--role", b.role, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"another neco agent (pid {a.proc.pid}) is using state directory", r.stderr)
        self.assertEqual(a.get("/healthz")[0], 200)
        self.assertEqual(a.stop(), 0)

    def test_store_survives_kill_9(self):
        a = self.agent().start()
        self.assertTrue(wait_for(lambda: a.get_json("/status")[1]["role"] == "leader"))
        term1 = a.get_json("/status")[1]["leader"]["term"]
        a.proc.kill()
        a.proc.wait()
        a.start()
        self.assertTrue(wait_for(lambda: a.get_json("/status")[1]["role"] == "leader", 15))
        term2 = a.get_json("/status")[1]["leader"]["term"]
        # Revisions live in the store file: a new term is always larger than the last.
        self.assertGreater(term2, term1)
        self.assertEqual(a.stop(), 0)


if __name__ == "__main__":
    NECO = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
