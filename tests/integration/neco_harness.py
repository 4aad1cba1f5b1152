"""Helpers for integration tests that run the real `neco` binary on loopback free ports."""

import importlib.machinery
import importlib.util
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request


def _load_lab():
    root = os.environ.get("NECO_SOURCE_ROOT",
                          os.path.dirname(os.path.dirname(os.path.dirname(
                              os.path.abspath(__file__)))))
    path = os.path.join(root, "tools", "lab")
    loader = importlib.machinery.SourceFileLoader("neco_lab_ports", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


# A free loopback port below the ephemeral range (tools/lab explains why).
free_port = _load_lab().free_port


def wait_for(condition, timeout=10.0, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(interval)
    return condition()


def http(method, url, body=None, headers=None, timeout=5.0):
    """Returns (status, headers, body bytes); HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def role_text(state_dir, admin_port, metrics_port, log_level="info", extra="", cluster_port=None):
    # A free cluster API port: tests run in parallel, and on the default 9443 all but one
    # controller would fail to listen (and retry with a new certificate every few seconds).
    cluster = f"cluster:\n  api:\n    port: {cluster_port}\n" if cluster_port else ""
    return f"""node:
  name: itest-node
controller: true
state_dir: {state_dir}
log_level: {log_level}
shutdown_timeout: 5s
store:
  election_ttl: 2s
admin:
  port: {admin_port}
  socket: {state_dir}/admin.sock
metrics:
  port: {metrics_port}
modules: {{}}
{cluster}{extra}"""


class Agent:
    """One `neco agent` process with its own temp dir, role file and free ports."""

    def __init__(self, binary, env=None, log_level="info"):
        self.binary = binary
        self.dir = tempfile.mkdtemp(prefix="neco-itest-")
        self.state = os.path.join(self.dir, "state")
        self.admin_port = free_port()
        self.metrics_port = free_port()
        self.cluster_port = free_port()
        self.role = os.path.join(self.dir, "role.yaml")
        self.write_role(log_level=log_level)
        self.log_path = os.path.join(self.dir, "agent.log")
        self.env = dict(os.environ)
        self.env.pop("NOTIFY_SOCKET", None)
        self.env.pop("JOURNAL_STREAM", None)
        self.env.update(env or {})
        self.proc = None
        self.log = None

    def set_modules(self, section):
        """Replaces the role file's empty `modules: {}` with `section` (YAML text that starts
        with "modules:")."""
        with open(self.role) as f:
            role = f.read()
        if "modules: {}\n" not in role:
            raise ValueError("the role file has no empty modules section to replace")
        with open(self.role, "w") as f:
            f.write(role.replace("modules: {}\n", section))

    def write_role(self, log_level="info", extra="", admin_port=None):
        with open(self.role, "w") as f:
            f.write(role_text(self.state, admin_port or self.admin_port, self.metrics_port,
                              log_level, extra, self.cluster_port))

    @property
    def admin(self):
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def metrics(self):
        return f"http://127.0.0.1:{self.metrics_port}"

    def start(self, wait=True, stderr=None):
        if self.log:
            self.log.close()
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([self.binary, "agent", "--role", self.role],
                                     stdout=self.log, stderr=stderr or self.log, env=self.env)
        if wait and not wait_for(lambda: self.get("/healthz")[0] == 200, timeout=20):
            raise RuntimeError("agent did not come up:\n" + self.output())
        return self

    def get(self, path, base=None, headers=None):
        return http("GET", (base or self.admin) + path, headers=headers)

    def get_json(self, path):
        status, _, body = self.get(path)
        return status, json.loads(body)

    def output(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=15):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise
        return self.proc.returncode if self.proc else None

    def cleanup(self):
        try:
            if self.proc and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        finally:
            if self.log:
                self.log.close()
            subprocess.run(["rm", "-rf", self.dir], check=False)

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0
