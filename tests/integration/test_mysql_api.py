"""Clusters created through `neco mysql create` (the admin API) against three real mariadbd
instances, one controller agent (SQLite store) with the mysql module on and no role-file
cluster. Checks that a created cluster comes up healthy in `neco mysql status` with source
"api"; that delete is refused while it is managed and accepted once paused (its keys gone);
and bad input through the module: a cluster whose instances are unreachable (ports nothing
listens on) and one with a wrong admin password show a per-instance error naming the instance
(connection refused / access denied), state lost, and NO operation: the servers keep their
read_only and replication, failovers stay 0, and the wrong password never appears in the
agent's log or the status output. The servers are started by test_mysql.py's setup (mariadb_fixture,
not copied). Skips (77) without mariadbd. Usage: test_mysql_api.py NECO_BINARY."""

import json
import os
import shutil
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_mysql as base  # noqa: E402
from neco_harness import Agent, free_port, wait_for  # noqa: E402

NECO = None
WRONG_PASSWORD = "wrong-Pa55-7f3e"


class MysqlApiClusters(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="neco-mysql-api-it-")
        cls.servers = []
        cls.agent = None
        try:
            # test_mysql.py's server setup: primary m0, semi-sync replicas m1 and m2.
            base.MysqlModule.__dict__["start_servers"].__func__(cls)
            for name, pw in (("admin.pw", "adminpw\n"), ("repl.pw", "replpw\n"),
                             ("wrong.pw", WRONG_PASSWORD + "\n")):
                with open(os.path.join(cls.root, name), "w") as f:
                    f.write(pw)
            cls.agent = Agent(NECO)
            cls.agent.set_modules("modules:\n  mysql:\n    interval: 300ms\n")
            cls.agent.start()
        except Exception:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.agent:
            cls.agent.stop()
            cls.agent.cleanup()
        for s in cls.servers:
            s.stop()
        shutil.rmtree(cls.root, ignore_errors=True)

    # Helpers shared with test_mysql.py's class (same names, same behaviour).
    neco = base.MysqlModule.neco
    server = base.MysqlModule.server
    writable = base.MysqlModule.writable
    metric = base.MysqlModule.metric

    def status(self, cluster):
        return json.loads(self.neco("mysql", "status", cluster, "--json").stdout)

    def wait_status(self, cluster, condition, timeout, what):
        last = {}

        def check():
            nonlocal last
            last = self.status(cluster)
            return condition(last)
        if not wait_for(check, timeout=timeout, interval=0.2):
            self.fail(f"{what}: last status {json.dumps(last)}\n" + self.agent.output()[-4000:])
        return last

    def create(self, cluster, instances, admin_pw="admin.pw", fmt="yaml", check=True):
        path = os.path.join(self.root, f"{cluster}.{fmt}")
        cred = {"admin_user": "admin", "admin_password_file": os.path.join(self.root, admin_pw),
                "repl_user": "repl", "repl_password_file": os.path.join(self.root, "repl.pw")}
        policy = {"replica_silence": "2s", "failure_confirm": "1s", "kill_grace": "200ms"}
        with open(path, "w") as f:
            if fmt == "json":
                json.dump({"instances": instances, "credentials": cred, "policy": policy}, f)
            else:
                f.write("instances:\n")
                for i in instances:
                    f.write(f"  - {{name: {i['name']}, host: {i['host']}, port: {i['port']}, "
                            f"primary: {'true' if i.get('primary') else 'false'}}}\n")
                f.write("credentials:\n" + "".join(f"  {k}: {v}\n" for k, v in cred.items()))
                f.write("policy:\n" + "".join(f"  {k}: {v}\n" for k, v in policy.items()))
        return self.neco("mysql", "create", cluster, "--file", path, check=check)

    def real_instances(self):
        return [{"name": s.name, "host": "127.0.0.1", "port": s.port, "primary": i == 0}
                for i, s in enumerate(self.servers)]

    def replicating(self, name):
        # Slave_running is ON while both the IO and the SQL thread run.
        r = self.server(name).sql("SHOW GLOBAL STATUS LIKE 'Slave_running'", check=False)
        return r.returncode == 0 and r.stdout.split() == ["Slave_running", "ON"]

    def assert_servers_unchanged(self):
        self.assertTrue(self.writable("m0"))
        for name in ("m1", "m2"):
            self.assertFalse(self.writable(name), name)
            self.assertTrue(self.replicating(name), name)

    def test_1_create_healthy(self):
        r = self.create("c2", self.real_instances())
        self.assertIn("created", r.stdout)
        st = self.wait_status("c2", lambda s: s.get("state") == "healthy", 20, "never healthy")
        self.assertEqual(st["source"], "api")
        self.assertEqual(st["primary"], "m0")
        self.assertEqual(sorted(st["ready_replicas"]), ["m1", "m2"])
        table = self.neco("mysql", "status").stdout
        self.assertIn("c2", table)
        self.assertIn("healthy", table)
        listed = json.loads(self.neco("mysql", "status", "--json").stdout)["clusters"]
        self.assertEqual([(c["name"], c["source"]) for c in listed], [("c2", "api")])
        # The same definition again, as JSON: nothing changes.
        self.assertIn("unchanged", self.create("c2", self.real_instances(), fmt="json").stdout)

    def test_2_bad_definition_refused(self):
        inst = self.real_instances()
        inst[1]["primary"] = True
        r = self.create("c3", inst, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("primar", r.stderr)
        r = self.neco("mysql", "status", "c3", check=False)
        self.assertNotEqual(r.returncode, 0)

    def test_3_delete_refused_while_managed(self):
        r = self.neco("mysql", "delete", "c2", check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("stop-clustering", r.stderr)
        self.assertEqual(self.status("c2")["source"], "api")

    def test_4_unreachable_instances(self):
        ports = [free_port(), free_port()]
        self.create("down", [{"name": "d0", "host": "127.0.0.1", "port": ports[0],
                              "primary": True},
                             {"name": "d1", "host": "127.0.0.1", "port": ports[1]}])
        st = self.wait_status("down", lambda s: s.get("leader") is True
                              and set(s.get("instance_errors", {})) == {"d0", "d1"}, 20,
                              "no per-instance errors")
        self.assertEqual(st["state"], "lost")
        for name, port in (("d0", ports[0]), ("d1", ports[1])):
            why = st["instance_errors"][name]
            self.assertIn(f"127.0.0.1:{port}", why)
            self.assertIn("Can't connect", why)
        self.assertEqual(st["failovers"], 0)
        self.assertEqual(st["last_operation"]["kind"], "none")
        table = self.neco("mysql", "status", "down").stdout
        self.assertIn("d0: ", table)

    def test_5_wrong_credentials(self):
        self.create("badcred", self.real_instances(), admin_pw="wrong.pw")
        st = self.wait_status("badcred", lambda s: s.get("leader") is True
                              and len(s.get("instance_errors", {})) == 3, 20,
                              "no per-instance errors")
        self.assertIn(st["state"], ("lost", "failed"))
        for s in self.servers:
            self.assertIn("Access denied", st["instance_errors"][s.name])
        self.assertEqual(st["failovers"], 0)
        self.assertEqual(st["last_operation"]["kind"], "none")
        # Several more turns: still nothing done to the servers, and c2 is still healthy.
        self.assertTrue(wait_for(lambda: self.status("badcred").get("updated_ms", 0)
                                 > st["updated_ms"] + 1000, timeout=10, interval=0.2))
        self.assert_servers_unchanged()
        self.assertEqual(self.status("c2")["state"], "healthy")
        self.assertEqual(self.metric("neco_mysql_failovers_total", {"cluster": "badcred"}), 0.0)
        self.assertEqual(self.metric("neco_mysql_failovers_total", {"cluster": "c2"}), 0.0)
        everything = (self.neco("mysql", "status").stdout
                      + self.neco("mysql", "status", "--json").stdout + self.agent.output())
        self.assertNotIn(WRONG_PASSWORD, everything)
        self.assertNotIn("adminpw", everything)

    def test_6_delete_when_paused(self):
        for cluster in ("c2", "down", "badcred"):
            self.neco("mysql", "stop-clustering", cluster)
            self.assertTrue(self.status(cluster)["paused"])
            r = self.neco("mysql", "delete", cluster)
            self.assertIn("deleted", r.stdout)
            self.assertNotEqual(self.neco("mysql", "status", cluster, check=False).returncode, 0)
        self.assertTrue(wait_for(lambda: json.loads(
            self.neco("mysql", "status", "--json").stdout)["clusters"] == [], timeout=10))
        self.assert_servers_unchanged()
        self.assertIn("no longer managed", self.agent.output())


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: test_mysql_api.py NECO_BINARY", file=sys.stderr)
        sys.exit(2)
    NECO = base.NECO = os.path.abspath(sys.argv.pop(1))  # base.MysqlModule.neco uses its own
    if not base.available():
        print("SKIP: mariadbd, mariadb-install-db or the mariadb client not found (Debian "
              "package mariadb-server)", file=sys.stderr)
        sys.exit(77)
    unittest.main(verbosity=2, failfast=True)
