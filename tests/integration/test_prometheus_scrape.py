"""The real Prometheus server scrapes the agent's exporter on loopback: the target is up, the
stored MemTotal equals /proc/meminfo, the agent's own metrics come through the same endpoint,
and a scrape config with `params: {collect[]: [...]}` narrows what is stored. Skipped when
the `prometheus` binary is not installed.
Usage: test_prometheus_scrape.py NECO_BINARY [unittest args]."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from neco_harness import Agent, free_port, http, wait_for  # noqa: E402

NECO = None
PROMETHEUS = shutil.which("prometheus")


def meminfo_total_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal in /proc/meminfo")


class PrometheusScrape(unittest.TestCase):
    def setUp(self):
        if not PROMETHEUS:
            self.skipTest("prometheus is not installed")
        self.agent = Agent(NECO)
        self.addCleanup(self.agent.cleanup)
        self.agent.set_modules("modules:\n  exporter: {}\n")
        self.agent.start()
        self.target = f"127.0.0.1:{self.agent.metrics_port}"
        self.prom = self.start_prometheus()

    def start_prometheus(self):
        work = tempfile.mkdtemp(prefix="neco-prom-")
        self.addCleanup(shutil.rmtree, work, True)
        config = os.path.join(work, "prometheus.yml")
        with open(config, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: neco
    static_configs:
      - targets: ['{self.target}']
  - job_name: neco-meminfo-only
    params:
      'collect[]': [meminfo]
    static_configs:
      - targets: ['{self.target}']
  - job_name: neco-bad-filter
    params:
      'collect[]': [no_such_collector]
    static_configs:
      - targets: ['{self.target}']
""")
        port = free_port()
        log = open(os.path.join(work, "prometheus.log"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={os.path.join(work, 'data')}"],
            stdout=log, stderr=log)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.terminate)
        base = f"http://127.0.0.1:{port}"
        self.assertTrue(wait_for(lambda: http("GET", base + "/-/ready")[0] == 200, timeout=30),
                        "prometheus did not become ready")
        return base

    def query(self, expr):
        """The instant vector for expr as {job: float value}."""
        url = self.prom + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        status, _, body = http("GET", url)
        self.assertEqual(status, 200, body)
        data = json.loads(body)
        self.assertEqual(data["status"], "success")
        return {r["metric"].get("job", ""): float(r["value"][1]) for r in data["data"]["result"]}

    def wait_query(self, expr, job, timeout=30):
        got = {}

        def ready():
            got.update(self.query(expr))
            return job in got
        self.assertTrue(wait_for(ready, timeout=timeout, interval=0.2),
                        f"{expr} for job {job} never appeared: {got}")
        return got[job]

    def test_prometheus_stores_what_the_agent_exports(self):
        self.assertEqual(self.wait_query("up", "neco"), 1.0)
        self.assertEqual(self.wait_query("node_memory_MemTotal_bytes", "neco"),
                         float(meminfo_total_bytes()))
        # The agent's own and the core registry's metrics share the endpoint.
        self.assertEqual(self.wait_query("neco_build_info", "neco"), 1.0)
        self.assertEqual(
            self.wait_query('neco_module_health{module="exporter",state="healthy"}', "neco"),
            1.0)
        # The collectors whose sources every Linux host has all succeeded (hwmon, nvme, edac
        # and the like report 0 on machines without that hardware, as node_exporter does).
        core = "cpu|filefd|filesystem|loadavg|meminfo|netdev|stat|time|uname|vmstat"
        ok = self.query(f'count(node_scrape_collector_success{{job="neco",collector=~"{core}"}}'
                        ' == 1)')
        self.assertEqual(ok, {"": 10.0})

    def test_collect_params_narrow_the_scrape(self):
        self.assertEqual(self.wait_query("up", "neco-meminfo-only"), 1.0)
        self.wait_query("node_memory_MemTotal_bytes", "neco-meminfo-only")
        # Only meminfo's collector ran for that job.
        ran = self.query('count by (job) (node_scrape_collector_success{job="neco-meminfo-only"})')
        self.assertEqual(ran, {"neco-meminfo-only": 1.0})
        self.assertEqual(self.query('node_load1{job="neco-meminfo-only"}'), {})
        # A filter naming no collector is a failed scrape (400), as with node_exporter.
        self.assertEqual(self.wait_query("up", "neco-bad-filter"), 0.0)
        status, _, body = http(
            "GET", f"http://{self.target}/metrics?collect[]=no_such_collector")
        self.assertEqual(status, 400)
        self.assertIn("missing collector", json.loads(body)["message"])


def main():
    global NECO
    NECO = sys.argv.pop(1)
    unittest.main()


if __name__ == "__main__":
    main()
