"""Smoke test of the fully static binary: `file` says statically linked, and the agent on the
single-node example role (with a temp state dir and free ports) serves /healthz, /status and
/metrics that promtool parses. Usage: static_smoke.py PATH_TO_STATIC_NECO"""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from neco_harness import free_port, http, wait_for  # noqa: E402


def text_mapping(pid, binary):
    """Size, Rss (KiB) and VmFlags of the executable's r-xp mapping, from /proc/PID/smaps."""
    with open(f"/proc/{pid}/smaps") as f:
        blocks = re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", f.read())
    real = os.path.realpath(binary)
    for b in blocks:
        head = b.split("\n", 1)[0].split()
        if len(head) >= 6 and head[1] == "r-xp" and os.path.realpath(head[5]) == real:
            fields = dict(re.findall(r"^(\w+):\s+(.*?)(?: kB)?$", b, re.M))
            return int(fields["Size"]), int(fields["Rss"]), fields["VmFlags"].split()
    raise AssertionError("no r-xp mapping of the binary in smaps")


def check_code_residency(pid, admin, metrics):
    """agent/runtime/code_residency: the code is mapped page by page (VmFlags `uw`), and 10 s
    after READY the startup-only pages are released, so the resident part of .text is what
    the agent keeps running: here well under a third of it."""
    size, rss, flags = text_mapping(pid, f"/proc/{pid}/exe")
    if "uw" not in flags:
        print(f"static smoke: code residency not applied (kernel without asynchronous "
              f"userfaultfd write-protect, Linux < 6.7): text {rss} of {size} KiB resident")
        return
    time.sleep(11)
    for _ in range(20):
        assert http("GET", f"http://127.0.0.1:{metrics}/metrics")[0] == 200
        assert http("GET", f"http://127.0.0.1:{admin}/status")[0] == 200
    size, rss, flags = text_mapping(pid, f"/proc/{pid}/exe")
    assert rss * 3 < size, f"text {rss} of {size} KiB resident after the release"
    print(f"static smoke: text {rss} of {size} KiB resident")


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
        check_code_residency(proc.pid, admin, metrics)
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
