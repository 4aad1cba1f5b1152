"""The netboot inventory through the real `neco` CLI against one real controller agent (SQLite
store; DHCP and TFTP off, so no privileged ports or namespaces): IPAM, registration (file,
array, stdin), list filters and --json, the lifecycle's refusals, label updates, removal only
once retired, the audit log naming who did each mutation, and the leader's health feed moving
the machine named like the agent's own node to healthy. Malformed files give a clear
error and change nothing. Usage: test_inventory_cli.py NECO_BINARY [unittest args]."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from neco_harness import Agent, free_port, wait_for  # noqa: E402

NECO = None

# sabakan's IPAM example (as in tests/unit/modules/netboot/ipam_example.hpp).
IPAM = {
    "max_nodes_in_rack": 27,
    "node_ipv4_pool": "10.69.0.0/16",
    "node_ipv4_offset": "",
    "node_ipv4_range_size": 6,
    "node_ipv4_range_mask": 26,
    "node_ip_per_node": 3,
    "node_index_offset": 3,
    "node_gateway_offset": 1,
    "bmc_ipv4_pool": "10.72.16.0/20",
    "bmc_ipv4_offset": "0.0.1.0",
    "bmc_ipv4_range_size": 5,
    "bmc_ipv4_range_mask": 20,
    "bmc_ipv4_gateway_offset": 1,
}

MACHINES = [
    {"serial": "b1", "rack": 0, "role": "boot", "bmc_type": "IPMI-2.0"},
    {"serial": "n1", "rack": 0, "role": "worker", "bmc_type": "iDRAC-9"},
    {"serial": "n2", "rack": 1, "role": "worker", "bmc_type": "iDRAC-9"},
]


class InventoryCli(unittest.TestCase):
    """One agent for the class; the tests run in name order and build on each other."""

    @classmethod
    def setUpClass(cls):
        cls.agent = Agent(NECO)
        cls.agent.set_modules("modules:\n  netboot:\n    dhcp:\n      enabled: false\n"
                              "    tftp:\n      enabled: false\n"
                              f"    http:\n      address: 127.0.0.1\n      port: {free_port()}\n")
        # Heartbeats every second, so the leader's health feed runs within the test.
        with open(cls.agent.role) as f:
            role = f.read()
        with open(cls.agent.role, "w") as f:
            f.write(role.replace("cluster:\n  api:\n", "cluster:\n  heartbeat_interval: 1s\n  api:\n"))
        cls.tmp = tempfile.mkdtemp(prefix="neco-inv-")
        try:
            cls.agent.start()
        except Exception:
            cls.agent.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.agent.stop()
        finally:
            cls.agent.cleanup()
            subprocess.run(["rm", "-rf", cls.tmp], check=False)

    def neco(self, *args, stdin=None):
        r = subprocess.run([NECO, *args, "--admin", self.agent.admin], input=stdin,
                           capture_output=True, text=True, timeout=30)
        return r.returncode, r.stdout, r.stderr

    def ok(self, *args, stdin=None):
        code, out, err = self.neco(*args, stdin=stdin)
        self.assertEqual(code, 0, f"neco {' '.join(args)}: {out}{err}")
        return out

    def refused(self, *args, code=1, stdin=None):
        got, out, err = self.neco(*args, stdin=stdin)
        self.assertEqual(got, code, f"neco {' '.join(args)} should exit {code}: {out}{err}")
        return err

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def machines(self, *filters):
        return json.loads(self.ok("machines", "list", "--json", *filters))["machines"]

    def serials(self, *filters):
        return [m["serial"] for m in self.machines(*filters)]

    def test_01_ipam(self):
        err = self.refused("ipam", "get")
        self.assertIn("404", err)
        err = self.refused("ipam", "set", self.write("bad.json", '{"max_nodes_in_rack": 27,'))
        self.assertIn("is not valid JSON", err)
        wrong = dict(IPAM, colour="blue")
        err = self.refused("ipam", "set", self.write("wrong.json", json.dumps(wrong)))
        self.assertIn("colour", err)
        err = self.refused("ipam", "set", os.path.join(self.tmp, "missing.json"))
        self.assertIn("cannot read", err)
        self.refused("ipam", "get")  # still nothing stored

        self.assertIn("stored", self.ok("ipam", "set", self.write("ipam.json", json.dumps(IPAM))))
        self.assertEqual(json.loads(self.ok("ipam", "get", "--json")), IPAM)
        self.assertIn("10.69.0.0/16", self.ok("ipam", "get"))

    def test_02_register(self):
        err = self.refused("machines", "register", self.write("m-bad.json", "[{\"serial\": "))
        self.assertIn("is not valid JSON", err)
        bad_item = MACHINES + [{"serial": "n9", "rack": "one", "role": "w", "bmc_type": "x"}]
        err = self.refused("machines", "register", self.write("m-item.json", json.dumps(bad_item)))
        self.assertIn("machine [3]", err)
        self.assertEqual(self.serials(), [])  # nothing registered

        out = self.ok("machines", "register", self.write("m.json", json.dumps(MACHINES)))
        self.assertIn("registered b1: rack 0 index 3, node 10.69.0.3", out)
        self.assertIn("registered n1: rack 0 index 4, node 10.69.0.4, BMC 10.72.17.4", out)
        self.assertIn("registered n2: rack 1 index 4", out)
        err = self.refused("machines", "register", "-", stdin=json.dumps(MACHINES[1]))
        self.assertIn("already", err)
        # The same config again changes nothing; another one is refused while machines exist.
        self.ok("ipam", "set", os.path.join(self.tmp, "ipam.json"))
        other = dict(IPAM, max_nodes_in_rack=20)
        err = self.refused("ipam", "set", self.write("ipam2.json", json.dumps(other)))
        self.assertIn("409", err)
        self.assertEqual(json.loads(self.ok("ipam", "get", "--json")), IPAM)

    def test_03_list(self):
        out = self.ok("machines", "list")
        lines = out.splitlines()
        self.assertEqual(lines[0].split(),
                         ["SERIAL", "RACK", "INDEX", "ROLE", "STATE", "NODE-IP", "BMC-IP"])
        self.assertEqual(lines[2].split(),
                         ["n1", "0", "4", "worker", "uninitialized", "10.69.0.4", "10.72.17.4"])
        self.assertEqual(len(lines), 4)
        self.assertEqual(self.serials(), ["b1", "n1", "n2"])
        self.assertEqual(self.serials("--rack", "0"), ["b1", "n1"])
        self.assertEqual(self.serials("--role", "boot"), ["b1"])
        self.assertEqual(self.serials("--serial", "n2"), ["n2"])
        self.assertEqual(self.serials("--state", "healthy"), [])
        self.assertEqual(self.serials("--address", "10.69.0.196"), ["n2"])  # rack 1 index 4
        self.assertIn("colour", self.refused("machines", "list", "--state", "colour"))
        self.refused("machines", "list", "--bogus", code=2)
        self.refused("machines", "list", "--label", "novalue", code=2)
        m = json.loads(self.ok("machines", "get", "n1", "--json"))
        self.assertEqual(m["bmc"]["address"], "10.72.17.4")
        self.assertIn("iDRAC-9", self.ok("machines", "get", "n1"))
        self.assertIn("404", self.refused("machines", "get", "nope"))

    def test_04_set_state(self):
        self.assertIn("n1 is healthy", self.ok("machines", "set-state", "n1", "healthy"))
        self.assertEqual(self.serials("--state", "healthy"), ["n1"])
        err = self.refused("machines", "set-state", "n1", "retired")
        self.assertIn("may become:", err)
        self.assertIn("retiring", err)
        err = self.refused("machines", "set-state", "n1", "asleep")
        self.assertIn("asleep", err)
        self.assertIn("uninitialized", err)
        self.refused("machines", "set-state", "n1", code=2)

    def test_05_update(self):
        self.ok("machines", "update", "n1", "--label", "dc=tokyo", "--label", "gpu=yes",
                "--retire-date", "2030-01-31")
        self.ok("machines", "update", "n2", "--label", "dc=tokyo")
        self.assertEqual(self.serials("--label", "dc=tokyo"), ["n1", "n2"])
        self.assertEqual(self.serials("--label", "dc=tokyo", "--label", "gpu=yes"), ["n1"])
        out = self.ok("machines", "update", "n1", "--remove-label", "gpu")
        self.assertIn("dc=tokyo", out)
        m = json.loads(self.ok("machines", "get", "n1", "--json"))
        self.assertEqual(m["labels"], {"dc": "tokyo"})
        self.assertEqual(m["retire_date"], 1896048000)
        self.refused("machines", "update", "n1", code=2)  # nothing to change
        self.assertIn("retire_date", self.refused("machines", "update", "n1",
                                                  "--retire-date", "soon"))

    def test_06_remove(self):
        err = self.refused("machines", "remove", "n1")
        self.assertIn("retired", err)
        self.ok("machines", "set-state", "n1", "retiring")
        self.assertIn("n1", self.serials())
        self.ok("machines", "set-state", "n1", "retired")
        self.assertIn("removed n1", self.ok("machines", "remove", "n1"))
        self.assertEqual(self.serials(), ["b1", "n2"])
        self.refused("machines", "get", "n1")

    def test_07_audit(self):
        entries = json.loads(self.ok("machines", "audit", "--json", "--limit", "0"))["entries"]
        actions = [e["action"] for e in reversed(entries)]  # oldest first
        self.assertEqual(actions, ["put_ipam", "register", "register", "register", "set_state",
                                   "update", "update", "update", "set_state", "set_state",
                                   "remove"])
        for e in entries:
            self.assertTrue(e["who"].startswith("admin@127.0.0.1:"), e)
        states = json.loads(self.ok("machines", "audit", "--json", "--action", "set_state"))
        self.assertEqual([e["after"]["state"] for e in states["entries"]],
                         ["retired", "retiring", "healthy"])
        n1 = json.loads(self.ok("machines", "audit", "--json", "--serial", "n1", "--limit", "2"))
        self.assertEqual([e["action"] for e in n1["entries"]], ["remove", "set_state"])
        self.assertEqual(json.loads(self.ok("machines", "audit", "--json", "--since",
                                            "2100-01-01"))["entries"], [])
        table = self.ok("machines", "audit", "--serial", "n1", "--action", "set_state")
        self.assertIn("healthy -> retiring", table)
        self.refused("machines", "audit", "--since", "yesterday", code=2)

    def test_08_no_agent(self):
        r = subprocess.run([NECO, "machines", "list", "--admin", "http://127.0.0.1:1"],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)

    def test_99_health_feed(self):
        # The agent's own cluster member is "itest-node": the machine with that serial (names
        # compare case-insensitively) follows its heartbeats, uninitialized -> healthy.
        spec = {"serial": "ITEST-NODE", "rack": 2, "role": "worker", "bmc_type": "IPMI-2.0"}
        self.ok("machines", "register", self.write("self.json", json.dumps(spec)))
        self.assertTrue(wait_for(lambda: self.machines("--serial", "ITEST-NODE")[0]["state"] ==
                                 "healthy", timeout=15), self.agent.output()[-2000:])
        audit = json.loads(self.ok("machines", "audit", "--serial", "ITEST-NODE", "--json"))
        self.assertIn("netboot-health-feed", [e["who"] for e in audit["entries"]])


def main():
    global NECO
    NECO = os.path.abspath(sys.argv.pop(1))
    unittest.main()



if __name__ == "__main__":
    main()
