"""Parity of the exporter module with the real node_exporter: the `neco` binary with an
exporter section and `prometheus-node-exporter` limited to the same collectors both run here;
every family both expose must have the same type and label names, MemTotal must agree, and
`promtool check metrics` must find nothing in neco's output that it does not find in
node_exporter's. Skipped when node_exporter is not installed.
Usage: test_exporter.py NECO_BINARY [unittest args]."""

import os
import ctypes
import errno
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from neco_harness import Agent, free_port, http, wait_for  # noqa: E402

NECO = None
NODE_EXPORTER = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
PROMTOOL = shutil.which("promtool")

COLLECTORS = ["cpu", "diskstats", "edac", "entropy", "filefd", "filesystem", "hwmon", "loadavg",
              "meminfo", "netclass", "netdev", "nvme", "os", "pressure", "sockstat", "stat",
              "thermal_zone", "time", "timex", "uname", "vmstat"]
MOUNTS_EXCLUDE = ("^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|"
                  "var/lib/containers/storage/.+)($|/)")

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\S+)?$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{family: {"type": str, "labels": set of label names, "samples": {series: value}}}"""
    fams = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ", 3)
            fams.setdefault(name, {"labels": set(), "samples": {}})["type"] = typ
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "unparsable line: " + line
        name, labels, value = m.group(1), m.group(3) or "", m.group(4)
        fam = fams.get(name)
        if fam is None:
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and name[: -len(suffix)] in fams:
                    fam = fams[name[: -len(suffix)]]
        if fam is None:
            fam = fams.setdefault(name, {"labels": set(), "samples": {}, "type": "untyped"})
        names = {k for k, _ in LABEL.findall(labels)}
        fam["labels"] |= names
        fam["samples"][name + "{" + labels + "}"] = float(value)
    return fams


class ExporterParity(unittest.TestCase):
    def setUp(self):
        if not NODE_EXPORTER:
            self.skipTest("prometheus-node-exporter is not installed")

    def start_node_exporter(self):
        port = free_port()
        args = [NODE_EXPORTER, f"--web.listen-address=127.0.0.1:{port}",
                "--collector.disable-defaults", "--no-collector.netdev.netlink",
                f"--collector.filesystem.mount-points-exclude={MOUNTS_EXCLUDE}"]
        args += [f"--collector.{c}" for c in COLLECTORS]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        url = f"http://127.0.0.1:{port}/metrics"
        self.assertTrue(wait_for(lambda: http("GET", url)[0] == 200, timeout=20))
        return url

    def start_neco(self):
        a = Agent(NECO)
        self.addCleanup(a.cleanup)
        section = ("modules:\n  exporter:\n    collectors: [" + ", ".join(COLLECTORS) + "]\n")
        a.set_modules(section)
        a.start()
        return a.metrics + "/metrics"

    def test_families_match_node_exporter(self):
        ne_url = self.start_node_exporter()
        neco_url = self.start_neco()
        status, _, body = http("GET", ne_url, headers={"Accept": "text/plain"})
        self.assertEqual(status, 200)
        ne_text = body.decode()
        status, _, body = http("GET", neco_url, headers={"Accept": "text/plain"})
        self.assertEqual(status, 200)
        neco_text = body.decode()
        ne, ours = parse(ne_text), parse(neco_text)

        node_families = {n for n in ours if n.startswith("node_")}
        common = node_families & set(ne)
        # Everything neco exports under node_ exists in node_exporter too.
        self.assertEqual(node_families - set(ne), set())
        self.assertGreater(len(common), 50)
        for name in sorted(common):
            with self.subTest(family=name):
                self.assertEqual(ours[name]["type"], ne[name]["type"])
                self.assertEqual(ours[name]["labels"], ne[name]["labels"])
        self.assertEqual(ours["node_memory_MemTotal_bytes"]["samples"],
                         ne["node_memory_MemTotal_bytes"]["samples"])
        # Same mounts after the same exclusions.
        self.assertEqual(set(ours["node_filesystem_size_bytes"]["samples"]),
                         set(ne["node_filesystem_size_bytes"]["samples"]))
        # Same series (devices, labels) where the host's answer is stable between the scrapes.
        for name in ("node_disk_info", "node_disk_reads_completed_total", "node_os_info",
                     "node_os_version", "node_time_zone_offset_seconds",
                     "node_time_clocksource_available_info", "node_time_clocksource_current_info",
                     "node_sockstat_sockets_used", "node_pressure_cpu_waiting_seconds_total",
                     "node_timex_sync_status"):
            with self.subTest(series=name):
                self.assertEqual(name in ours, name in ne)
                if name in ne:
                    self.assertEqual(set(ours[name]["samples"]), set(ne[name]["samples"]))
        for name in ("node_disk_info", "node_os_info", "node_os_version",
                     "node_time_zone_offset_seconds", "node_time_clocksource_current_info",
                     "node_entropy_pool_size_bits", "node_timex_tick_seconds",
                     "node_timex_status"):
            if name in ne:
                self.assertEqual(ours[name]["samples"], ne[name]["samples"], name)
        # OpenMetrics carries the same node_ families (units must not make any invalid).
        status, _, body = http("GET", neco_url,
                               headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        self.assertEqual(status, 200)
        om_families = set(re.findall(r"^# TYPE (node_\S+) ", body.decode(), re.M))
        self.assertEqual(len(om_families), len(node_families))
        # Each collector succeeds (or, for a sysfs class this host lacks, reports "no data")
        # exactly where node_exporter does.
        for c in COLLECTORS:
            key = f'node_scrape_collector_success{{collector="{c}"}}'
            self.assertEqual(ours["node_scrape_collector_success"]["samples"][key],
                             ne["node_scrape_collector_success"]["samples"][key], c)
        self.assertEqual(ours["node_scrape_collector_success"]["samples"]
                         ['node_scrape_collector_success{collector="meminfo"}'], 1.0)
        # Same network devices, with the same values for what does not change between scrapes.
        for fam in ("node_network_info", "node_network_mtu_bytes", "node_network_up",
                    "node_network_iface_id"):
            if fam in ne:
                self.assertEqual(ours[fam]["samples"], ne[fam]["samples"], fam)

        if PROMTOOL:
            def lint(text):
                r = subprocess.run([PROMTOOL, "check", "metrics"], input=text,
                                   capture_output=True, text=True, timeout=30)
                return {line.strip() for line in (r.stdout + r.stderr).splitlines()
                        if line.strip()}
            ours_lint, ne_lint = lint(neco_text), lint(ne_text)
            self.assertEqual({p for p in ours_lint - ne_lint if "node_" in p}, set())


class HangingFuse:
    """A FUSE filesystem spoken over /dev/fuse directly (no libfuse): it answers INIT and
    GETATTR, holds every STATFS unanswered until release(), and refuses everything else."""

    INIT, GETATTR, STATFS, FORGET, INTERRUPT, BATCH_FORGET = 26, 3, 17, 2, 36, 42

    def __init__(self, mountpoint):
        self.mountpoint = mountpoint
        self.fd = os.open("/dev/fuse", os.O_RDWR)
        self.statfs_calls = 0
        self.pending = []
        self.released = False
        self.lock = threading.Lock()
        libc = ctypes.CDLL(None, use_errno=True)
        opts = f"fd={self.fd},rootmode=40000,user_id=0,group_id=0".encode()
        if libc.mount(b"necohang", mountpoint.encode(), b"fuse.necohang", 0, opts) != 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(err, os.strerror(err))
        self.libc = libc
        threading.Thread(target=self.serve, daemon=True).start()

    def reply(self, unique, payload=b"", error=0):
        os.write(self.fd, struct.pack("<IiQ", 16 + len(payload), error, unique) + payload)

    @staticmethod
    def statfs_payload():
        # struct fuse_kstatfs: blocks bfree bavail files ffree (u64), bsize namelen frsize
        # padding (u32), spare[6] (u32).
        return struct.pack("<QQQQQIIII6I", 1000, 500, 400, 100, 50, 4096, 255, 4096, 0,
                           *([0] * 6))

    def serve(self):
        while True:
            try:
                buf = os.read(self.fd, 1 << 21)
            except OSError:
                return
            _, opcode, unique, _ = struct.unpack_from("<IIQQ", buf)
            if opcode == self.INIT:
                major, minor = struct.unpack_from("<II", buf, 40)
                self.reply(unique, struct.pack("<IIIIHHIIHHI7I", 7, min(minor, 31), 0, 0, 16,
                                               12, 1 << 20, 1, 0, 0, 0, *([0] * 7)))
            elif opcode == self.GETATTR:
                attr = struct.pack("<QQQQQQIIIIIIIIII", 1, 0, 0, 0, 0, 0, 0, 0, 0, 0o40755,
                                   2, 0, 0, 0, 4096, 0)
                self.reply(unique, struct.pack("<QII", 1, 0, 0) + attr)
            elif opcode == self.STATFS:
                with self.lock:
                    self.statfs_calls += 1
                    if not self.released:
                        self.pending.append(unique)
                        continue
                self.reply(unique, self.statfs_payload())
            elif opcode in (self.FORGET, self.BATCH_FORGET, self.INTERRUPT):
                continue
            else:
                self.reply(unique, error=-errno.ENOSYS)

    def release(self):
        with self.lock:
            self.released = True
            pending, self.pending = self.pending, []
        for unique in pending:
            self.reply(unique, self.statfs_payload())

    def close(self):
        self.libc.umount2(self.mountpoint.encode(), 2)  # MNT_DETACH
        os.close(self.fd)


class StuckMount(unittest.TestCase):
    """A mount whose statfs never returns costs one deadline once, then nothing."""

    def test_hung_fuse_mount(self):
        if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
            self.skipTest("needs root and /dev/fuse")
        mnt = tempfile.mkdtemp(prefix="neco-hang-")
        self.addCleanup(os.rmdir, mnt)
        try:
            fuse = HangingFuse(mnt)
        except OSError as e:
            self.skipTest(f"cannot mount FUSE here: {e}")
        self.addCleanup(fuse.close)

        a = Agent(NECO)
        self.addCleanup(a.cleanup)
        section = ("modules:\n  exporter:\n    collectors: [filesystem]\n"
                   "    filesystem:\n      mount_timeout: 500ms\n")
        a.set_modules(section)
        a.start()
        url = a.metrics + "/metrics"
        series = f'{{device="necohang",fstype="fuse.necohang",mountpoint="{mnt}"}}'

        def scrape():
            t0 = time.monotonic()
            status, _, body = http("GET", url, headers={"Accept": "text/plain"}, timeout=10)
            self.assertEqual(status, 200)
            return parse(body.decode()), time.monotonic() - t0

        fams, took = scrape()
        self.assertGreaterEqual(took, 0.45)
        self.assertLess(took, 2.0)
        self.assertEqual(fams["node_filesystem_device_error"]["samples"]
                         ["node_filesystem_device_error" + series], 1.0)
        self.assertNotIn("node_filesystem_size_bytes" + series,
                         fams["node_filesystem_size_bytes"]["samples"])
        self.assertEqual(fams["node_scrape_collector_success"]["samples"]
                         ['node_scrape_collector_success{collector="filesystem"}'], 1.0)

        # Still hung: reported at once, and no second statfs is sent to the mount.
        fams, took = scrape()
        self.assertLess(took, 0.4)
        self.assertEqual(fams["node_filesystem_device_error"]["samples"]
                         ["node_filesystem_device_error" + series], 1.0)
        self.assertEqual(fuse.statfs_calls, 1)

        # Once the statfs returns, the mount is statfs'd again and reported in full.
        fuse.release()
        self.assertTrue(wait_for(
            lambda: scrape()[0]["node_filesystem_device_error"]["samples"]
            ["node_filesystem_device_error" + series] == 0.0))
        fams, _ = scrape()
        self.assertEqual(fams["node_filesystem_size_bytes"]["samples"]
                         ["node_filesystem_size_bytes" + series], 1000 * 4096.0)


class MountChanges(unittest.TestCase):
    """The mount table is cached between scrapes; a mount or unmount shows in the next one."""

    def test_new_and_removed_mounts_show_up(self):
        if os.geteuid() != 0:
            self.skipTest("needs root to mount")
        mnt = tempfile.mkdtemp(prefix="neco-mnt-")
        self.addCleanup(os.rmdir, mnt)
        a = Agent(NECO)
        self.addCleanup(a.cleanup)
        a.set_modules("modules:\n  exporter:\n    collectors: [filesystem]\n")
        a.start()
        url = a.metrics + "/metrics"
        series = f'node_filesystem_size_bytes{{device="necotmp",fstype="tmpfs",mountpoint="{mnt}"}}'

        def sizes():
            status, _, body = http("GET", url, headers={"Accept": "text/plain"})
            self.assertEqual(status, 200)
            return parse(body.decode())["node_filesystem_size_bytes"]["samples"]

        self.assertNotIn(series, sizes())
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "necotmp", mnt], check=True)
        try:
            self.assertEqual(sizes().get(series), 4 * 1024 * 1024.0)
        finally:
            subprocess.run(["umount", mnt], check=True)
        self.assertNotIn(series, sizes())


def main():
    global NECO
    NECO = sys.argv.pop(1)
    unittest.main()


if __name__ == "__main__":
    main()
