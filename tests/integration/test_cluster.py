"""Cluster integration tests on tools/lab: 3 real etcd members, 3 controller agents and node
agents on loopback free ports. Failure tests (leader kill -9, SIGSTOP, etcd member and quorum
loss, controller restarts) and bad input on the cluster API (mutual TLS).

Run: python3 test_cluster.py path/to/neco
"""

import base64
import http.client
import importlib.machinery
import importlib.util
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("NECO_SOURCE_ROOT", os.path.dirname(os.path.dirname(HERE)))


def load_lab():
    path = os.path.join(ROOT, "tools", "lab")
    loader = importlib.machinery.SourceFileLoader("neco_lab", path)
    spec = importlib.util.spec_from_loader("neco_lab", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


lab_mod = load_lab()
http_json = lab_mod.http
wait_for = lab_mod.wait_for
NECO = None
TTL = 3  # seconds: the lab's election lease TTL


def etcdctl(lab, *args, check=True):
    """Runs etcdctl (v3 API) against the lab's members."""
    env = dict(os.environ, ETCDCTL_API="3")
    r = subprocess.run(["etcdctl", "--endpoints", ",".join(lab.etcd_endpoints()),
                        "--command-timeout=3s", *args],
                       capture_output=True, text=True, env=env, timeout=20)
    if check and r.returncode != 0:
        raise AssertionError(f"etcdctl {args}: {r.stderr}")
    return r


def metric(lab, i, name, labels=""):
    port = lab.info["controllers"][i]["metrics"]
    code, text = http_json("GET", f"http://127.0.0.1:{port}/metrics")
    total = 0.0
    for line in (text if isinstance(text, str) else "").splitlines():
        if line.startswith(name + "{" if labels else name) and labels in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class ApiClient:
    """The cluster API over TLS with an optional client certificate (files)."""

    def __init__(self, port, ca_file=None, cert=None, key=None):
        self.port = port
        self.ctx = ssl.create_default_context(cafile=ca_file) if ca_file else \
            ssl._create_unverified_context()
        if ca_file:
            self.ctx.check_hostname = False  # controllers are reached by IP; the CA is ours
        if cert:
            self.ctx.load_cert_chain(cert, key)

    def call(self, method, path, body=None):
        c = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=10)
        try:
            c.request(method, path, body=json.dumps(body) if body is not None else None,
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            raw = r.read().decode()
            try:
                return r.status, json.loads(raw)
            except ValueError:
                return r.status, raw
        finally:
            c.close()


class ClusterTest(unittest.TestCase):
    """One lab for the whole class; tests run in name order and leave it healthy."""

    @classmethod
    def setUpClass(cls):
        if shutil.which("etcd") is None or shutil.which("etcdctl") is None:
            raise unittest.SkipTest("etcd-server/etcd-client not installed")
        cls.tmp = tempfile.mkdtemp(prefix="neco-lab-test-")
        cls.lab = lab_mod.Lab(os.path.join(cls.tmp, "lab"), NECO, nodes=2,
                              election_ttl=f"{TTL}s")
        cls.lab.up()

    @classmethod
    def tearDownClass(cls):
        cls.lab.down(remove=False)
        if os.environ.get("NECO_LAB_KEEP"):
            print(f"lab kept in {cls.lab.dir}", file=sys.stderr)
            return
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.started = time.time()

    def tearDown(self):
        # On failure, the agents' last log lines are the quickest way to see why.
        outcome = getattr(self, "_outcome", None)
        errors = getattr(getattr(outcome, "result", None), "errors", []) + \
            getattr(getattr(outcome, "result", None), "failures", [])
        if any(t is self for t, _ in errors):
            for p in self.lab.controllers + self.lab.nodes:
                with open(p.log, errors="replace") as f:
                    tail = f.readlines()[-15:]
                print(f"--- {p.name} (last lines) ---\n{''.join(tail)}", file=sys.stderr)

    def all_names(self):
        return [c["name"] for c in self.lab.info["controllers"]] + \
               [n["name"] for n in self.lab.info["nodes"]]

    def wait_new_leader(self, old, timeout):
        t0 = time.monotonic()
        try:
            i = wait_for("a new leader", lambda: next(
                (j for j in range(3) if j != old and self.lab.controllers[j].alive() and
                 self.lab.status(j).get("role") == "leader"), None), timeout, 0.05)
        except TimeoutError:
            for j in range(3):
                t = time.monotonic()
                st = self.lab.status(j) if j != old else "stopped"
                print(f"controller{j}: {time.monotonic() - t:.2f}s {st}", file=sys.stderr)
            raise
        return i, time.monotonic() - t0

    def term_of(self, i):
        return self.lab.status(i).get("leader", {}).get("term", 0)

    def restart_controller(self, i):
        self.lab.controllers[i].stop()
        self.lab.controllers[i].start()
        wait_for(f"controller{i} serving", lambda: self.lab.status(i).get(
            "cluster", {}).get("serving"), 30)

    # ---- the lab itself ----

    def test_10_lab_lists_every_node_healthy(self):
        view = {n["name"]: n for n in self.lab.nodes_view()}
        self.assertEqual(sorted(view), sorted(self.all_names()))
        for name, n in view.items():
            self.assertEqual(n["state"], "healthy", name)
            self.assertEqual(n["version"], "0.1.0")
        roles = sorted(n["role"] for n in view.values())
        self.assertEqual(roles.count("controller"), 3)
        # The CLI shows the same view.
        r = subprocess.run([NECO, "nodes", "--admin", self.lab.admin(self.lab.leader())],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"node0 +node +0\.1\.0 +healthy")
        # Every controller serves the same CA.
        fps = {self.lab.status(i)["cluster"]["ca_fingerprint"] for i in range(3)}
        self.assertEqual(len(fps), 1)
        # The CA key is kept with owner-only permissions.
        st = os.stat(os.path.join(self.lab.dir, "controller0", "pki", "ca.key"))
        self.assertEqual(st.st_mode & 0o777, 0o600)

    def test_11_a_silent_node_becomes_unreachable_and_recovers(self):
        self.lab.nodes[1].signal(signal.SIGSTOP)
        try:
            wait_for("node1 unreachable", lambda: {n["name"]: n["state"] for n in
                                                   self.lab.nodes_view()}.get("node1")
                     == "unreachable", 20, 0.2)
        finally:
            self.lab.nodes[1].signal(signal.SIGCONT)
        self.lab.wait_healthy(["node1"], 20)

    def test_12_desired_state_reaches_the_node_by_long_poll(self):
        # Later modules write desired state (upgrade, reboot); here the store is written
        # directly, as a control loop would.
        doc = {"generation": 7, "reboot": True}
        etcdctl(self.lab, "put", "/neco/cluster/desired/node0", json.dumps(doc))
        t0 = time.monotonic()
        wait_for("node0 to see its desired state", lambda: http_json(
            "GET", self.lab.node_admin(0) + "/status")[1].get("cluster", {}).get("desired")
            == doc, 10, 0.05)
        # Delivered by the long-poll, not by a later poll round.
        self.assertLess(time.monotonic() - t0, 2)
        etcdctl(self.lab, "del", "/neco/cluster/desired/node0")

    # ---- bad input on the cluster API ----

    def test_20_bad_input_is_refused_and_counted(self):
        lab = self.lab
        leader = lab.leader()
        port = lab.info["controllers"][leader]["api"]
        pki = os.path.join(lab.dir, "node0", "pki")
        ca = os.path.join(pki, "ca.crt")
        me = ApiClient(port, ca, os.path.join(pki, "node.crt"), os.path.join(pki, "node.key"))
        before = {r: metric(lab, leader, "neco_cluster_rejected_requests_total", f'"{r}"')
                  for r in ("bad_csr", "expired_token", "identity_mismatch", "name_taken",
                            "no_client_cert")}

        # A node acting as another node.
        code, body = me.call("POST", "/v1/cluster/heartbeat", {"name": "node1"})
        self.assertEqual(code, 403, body)
        self.assertIn("can only act as itself", body["message"])
        # Its own heartbeat is fine.
        self.assertEqual(me.call("POST", "/v1/cluster/heartbeat", {"name": "node0"})[0], 200)
        # No client certificate for a call that needs one.
        self.assertEqual(ApiClient(port, ca).call("POST", "/v1/cluster/heartbeat", {})[0], 403)

        # A garbage CSR with a valid token: refused, and the token survives for a good join.
        tok = lab.create_token()
        code, body = ApiClient(port, ca).call("POST", "/v1/cluster/join", {
            "name": "intruder", "token": tok["token"], "csr": "-----BEGIN CERTIFICATE REQUEST-----\nZ"})
        self.assertEqual(code, 400, body)
        # Claiming an existing member's name.
        work = tempfile.mkdtemp(dir=self.tmp)
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "k.pem", "-out", "csr.pem", "-subj", "/CN=node0", cwd=work)
        with open(os.path.join(work, "csr.pem")) as f:
            csr = f.read()
        code, body = ApiClient(port, ca).call("POST", "/v1/cluster/join", {
            "name": "node0", "token": tok["token"], "csr": csr})
        self.assertEqual(code, 409, body)
        self.assertIn("already a member", body["message"])
        # An expired token.
        short = lab.create_token(ttl="1s")
        time.sleep(2.2)
        code, body = ApiClient(port, ca).call("POST", "/v1/cluster/join", {
            "name": "late", "token": short["token"], "csr": csr})
        self.assertEqual(code, 403, body)
        self.assertIn("expired", body["message"])

        # A certificate from another CA is refused at the TLS handshake.
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "evil-ca.key", "-out", "evil-ca.crt", "-subj", "/CN=evil", "-days", "1",
                cwd=work)
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "evil.key", "-out", "evil.csr", "-subj", "/CN=node0", cwd=work)
        openssl("x509", "-req", "-in", "evil.csr", "-CA", "evil-ca.crt", "-CAkey", "evil-ca.key",
                "-CAcreateserial", "-out", "evil.crt", "-days", "1", cwd=work)
        evil = ApiClient(port, ca, os.path.join(work, "evil.crt"), os.path.join(work, "evil.key"))
        refused = metric(lab, leader, "neco_http_tls_client_cert_refusals_total", '"cluster"')
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            evil.call("POST", "/v1/cluster/heartbeat", {"name": "node0"})
        wait_for("the refused certificate to be counted", lambda: metric(
            lab, leader, "neco_http_tls_client_cert_refusals_total", '"cluster"') > refused, 5)

        # The token is single use: one good join, then the same token is refused.
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "n.key", "-out", "n.csr", "-subj", "/CN=extra", cwd=work)
        with open(os.path.join(work, "n.csr")) as f:
            good = f.read()
        code, body = ApiClient(port, ca).call("POST", "/v1/cluster/join", {
            "name": "extra", "token": tok["token"], "csr": good})
        self.assertEqual(code, 200, body)
        self.assertIn("BEGIN CERTIFICATE", body["cert"])
        code, body = ApiClient(port, ca).call("POST", "/v1/cluster/join", {
            "name": "extra2", "token": tok["token"], "csr": good})
        self.assertEqual(code, 403, body)
        r = subprocess.run([NECO, "nodes", "remove", "extra", "--admin", lab.admin(leader)],
                           capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)

        after = {r: metric(lab, leader, "neco_cluster_rejected_requests_total", f'"{r}"')
                 for r in before}
        for reason in before:
            self.assertGreater(after[reason], before[reason], reason)

    # ---- leader failures ----

    def test_30_kill_9_leader_new_leader_within_ttl_and_old_term_fenced(self):
        lab = self.lab
        old = lab.leader()
        old_term = self.term_of(old)
        lab.controllers[old].kill()
        new, took = self.wait_new_leader(old, TTL + 2)
        self.assertLess(took, TTL + 2)
        new_term = self.term_of(new)
        self.assertGreater(new_term, old_term)
        # A write fenced by the old term, as the dead leader had in flight, is refused.
        fenced = f'create("/neco/election/leader") = "{old_term}"\n\nput /neco/cluster/probe x\n\n\n'
        r = subprocess.run(["etcdctl", "--endpoints", ",".join(lab.etcd_endpoints()), "txn"],
                           input=fenced, capture_output=True, text=True,
                           env=dict(os.environ, ETCDCTL_API="3"), timeout=20)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("FAILURE", r.stdout)
        self.assertEqual(etcdctl(lab, "get", "/neco/cluster/probe").stdout, "")
        # `neco status` on another controller names the new leader.
        other = next(j for j in range(3) if j not in (old, new))
        st = subprocess.run([NECO, "status", "--json", "--admin", lab.admin(other)],
                            capture_output=True, text=True, timeout=10)
        self.assertEqual(json.loads(st.stdout)["leader"]["name"], f"controller{new}")
        lab.controllers[old].start()
        wait_for("restarted controller serving", lambda: lab.status(old).get(
            "cluster", {}).get("serving"), 30)
        lab.wait_healthy(self.all_names(), 30)

    def test_31_sigstopped_leader_is_deposed_and_does_not_write(self):
        lab = self.lab
        old = lab.leader()
        old_term = self.term_of(old)
        refused_before = metric(lab, old, "neco_leader_fenced_writes_refused_total")
        lab.controllers[old].signal(signal.SIGSTOP)
        # While it is stopped, a node dies: the new leader, and the stale one once resumed,
        # both have a verdict to write.
        lab.nodes[1].signal(signal.SIGSTOP)
        self.addCleanup(lab.nodes[1].signal, signal.SIGCONT)
        try:
            new, _ = self.wait_new_leader(old, TTL + 3)
            new_term = self.term_of(new)
            wait_for("node1 unreachable", lambda: {n["name"]: n["state"] for n in
                                                   lab.nodes_view(new)}.get("node1")
                     == "unreachable", 20, 0.2)
        finally:
            lab.controllers[old].signal(signal.SIGCONT)
        wait_for("the resumed leader to see it was deposed",
                 lambda: lab.status(old).get("role") == "follower", 5, 0.05)
        time.sleep(2)
        # Nothing in the store was written under the old term after the new one began.
        r = etcdctl(lab, "get", "--prefix", "/neco/cluster/state/", "-w", "json")
        for kv in json.loads(r.stdout).get("kvs", []):
            doc = json.loads(base64.b64decode(kv["value"]))
            if int(kv["mod_revision"]) > new_term:
                self.assertNotEqual(doc["term"], old_term, doc)
        self.assertEqual(lab.leader(), new)
        lab.nodes[1].signal(signal.SIGCONT)
        lab.wait_healthy(self.all_names(), 30)
        self.assertGreaterEqual(metric(lab, old, "neco_leader_fenced_writes_refused_total"),
                                refused_before)

    # ---- etcd failures ----

    def test_40_one_etcd_member_down_cluster_keeps_working(self):
        lab = self.lab
        lab.etcd[0].stop()
        try:
            tok = lab.create_token()
            self.assertIn("token", tok)
            time.sleep(3)
            lab.wait_healthy(self.all_names(), 20)
            self.assertIsNotNone(lab.leader())
        finally:
            lab.etcd[0].start()
        wait_for("etcd0 healthy", lambda: http_json(
            "GET", lab.etcd_endpoints()[0] + "/health", timeout=1)[0] == 200, 30)

    def test_41_etcd_quorum_loss_no_leader_then_recovery(self):
        lab = self.lab
        lab.etcd[1].stop()
        lab.etcd[2].stop()
        try:
            wait_for("every controller to give up leadership", lambda: all(
                lab.status(i).get("role") == "follower" for i in range(3)), TTL + 10, 0.2)
            # Reads that need no quorum still answer.
            for i in range(3):
                code, body = http_json("GET", lab.admin(i) + "/status")
                self.assertEqual(code, 200)
                self.assertEqual(http_json("GET", lab.admin(i) + "/healthz")[0], 200)
            code, body = http_json("GET", lab.admin(0) + "/v1/cluster/nodes", timeout=15)
            self.assertIn(code, (503, 504), body)
        finally:
            lab.etcd[1].start()
            lab.etcd[2].start()
        wait_for("a leader again", lambda: lab.leader() is not None, 30, 0.2)
        lab.wait_healthy(self.all_names(), 40)

    # ---- identity across restarts ----

    def test_50_node_keeps_identity_across_controller_and_node_restarts(self):
        lab = self.lab
        crt = os.path.join(lab.dir, "node0", "pki", "node.crt")
        with open(crt) as f:
            before = f.read()
        for i in range(3):
            self.restart_controller(i)
        lab.nodes[0].stop()
        lab.nodes[0].start()
        lab.wait_healthy(self.all_names(), 40)
        with open(crt) as f:
            self.assertEqual(f.read(), before)
        with open(os.path.join(lab.dir, "node0.log")) as f:
            log = f.read()
        self.assertEqual(log.count("Joined the cluster"), 1)


class RenewalTest(unittest.TestCase):
    """Short-lived certificates: nodes and controllers renew them and keep working."""

    def test_certificates_are_renewed_before_expiry(self):
        if shutil.which("etcd") is None:
            self.skipTest("etcd-server not installed")
        tmp = tempfile.mkdtemp(prefix="neco-lab-test-")
        lab = lab_mod.Lab(os.path.join(tmp, "lab"), NECO, nodes=1, election_ttl=f"{TTL}s",
                          cert_validity="15s")
        try:
            lab.up()
            crt = os.path.join(lab.dir, "node0", "pki", "node.crt")
            def read():
                with open(crt) as f:
                    return f.read()
            first = read()
            t0 = time.monotonic()
            # Renewal starts once a third of the 15 s is left, i.e. after about 10 s.
            wait_for("a renewed node certificate", lambda: read() != first, 20, 0.5)
            self.assertGreater(time.monotonic() - t0, 5)
            names = [c["name"] for c in lab.info["controllers"]] + ["node0"]
            time.sleep(6)  # past the first certificate's expiry
            lab.wait_healthy(names, 10)
            with open(os.path.join(lab.dir, "node0.log")) as f:
                self.assertIn("Renewed the node certificate", f.read())
        finally:
            lab.down(remove=False)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    NECO = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
