"""Smoke test of the fully static binary: `file` says statically linked, and the agent on the
single-node example role (with a temp state dir and free ports) serves /healthz, /status and
/metrics that promtool parses. Usage: static_smoke.py PATH_TO_STATIC_NECO"""

import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from neco_harness import free_port, http, wait_for  # noqa: E402


def main(binary):
    desc = subprocess.run(["file", "-L", binary], capture_output=True, text=True).stdout
    assert "statically linked" in desc, desc
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    with open(os.path.join(src, "config", "roles", "single-node.yaml")) as f:
        role = f.read()
    tmp = tempfile.mkdtemp(prefix="neco-static-")
    admin, metrics = free_port(), free_port()
    role = role.replace("/var/lib/neco", os.path.join(tmp, "state"))
    role = re.sub(r"port: 9180", f"port: {admin}", role)
    role = re.sub(r"port: 9181", f"port: {metrics}", role)
    path = os.path.join(tmp, "single-node.yaml")
    with open(path, "w") as f:
        f.write(role)
    proc = subprocess.Popen([binary, "agent", "--role", path], stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: http("GET", f"http://127.0.0.1:{admin}/healthz")[0] == 200, 20)
        status, _, body = http("GET", f"http://127.0.0.1:{admin}/status")
        assert status == 200 and b'"node":"single-node"' in body, body
        status, _, body = http("GET", f"http://127.0.0.1:{metrics}/metrics")
        assert status == 200 and b"process_resident_memory_bytes" in body
        promtool = shutil.which("promtool")
        if promtool:
            r = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True)
            assert r.returncode == 0, r.stdout + r.stderr
        proc.terminate()
        assert proc.wait(timeout=15) == 0
        print(f"static smoke: OK ({desc.strip().split(',')[0]})")
        return 0
    finally:
        if proc.poll() is None:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
