"""The netboot module's DHCP server against real clients, in network namespaces this test
creates (and removes): the agent runs in a "server" namespace with a veth link to a "client"
namespace, and a third namespace routes through Debian's isc-dhcp-relay to a second subnet.

Clients: busybox udhcpc (vendor classes PXEClient/HTTPClient, option 93, the iPXE user class)
and ISC dhclient (init, release, init-reboot). Needs root and `ip netns`; skips otherwise.

Usage: test_netboot.py PATH_TO_NECO"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from neco_harness import Agent, free_port, wait_for  # noqa: E402

NECO = None
TAG = f"nb{os.getpid() % 100000}"
SRV, CLI, RLY, CL2 = (f"{TAG}s", f"{TAG}c", f"{TAG}r", f"{TAG}d")
SCRIPT_URL = "http://10.69.0.1/v1/netboot/ipxe/${serial}"
BOOT_URL = "http://10.69.0.1:10080"
IPAM = {"max_nodes_in_rack": 27, "node_ipv4_pool": "10.69.0.0/16", "node_ipv4_offset": "",
        "node_ipv4_range_size": 6, "node_ipv4_range_mask": 26, "node_ip_per_node": 3,
        "node_index_offset": 3, "node_gateway_offset": 1, "bmc_ipv4_pool": "10.72.16.0/20",
        "bmc_ipv4_offset": "0.0.1.0", "bmc_ipv4_range_size": 5, "bmc_ipv4_range_mask": 20,
        "bmc_ipv4_gateway_offset": 1}
IGNITION = """{"ignition": {"version": "3.3.0"},
 "storage": {"files": [{"path": "/etc/neco/rack", "contents": {"source": "data:,{{ rack }}"}}]},
 "x-neco": {"serial": "{{ serial }}", "ip": "{{ ipv4 }}", "zone": "{{ labels.zone }}"}}"""


def sh(*args, ns=None, check=True, timeout=30, **kw):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.returncode}\n{r.stdout}{r.stderr}")
    return r


def can_run():
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if shutil.which("ip") is None or shutil.which("busybox") is None:
        return "needs iproute2 and busybox"
    r = subprocess.run(["ip", "netns", "add", f"{TAG}probe"], capture_output=True)
    if r.returncode != 0:
        return f"cannot create network namespaces: {r.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", f"{TAG}probe"], capture_output=True)
    return None


def make_lab():
    """server 10.69.0.1/24 <-veth-> client; server <-veth 10.69.0.2-> relay 10.70.0.1/24 <-veth->
    client2. The server routes 10.70.0.0/24 back through the relay."""
    for ns in (SRV, CLI, RLY, CL2):
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "set", "lo", "up", ns=ns)
    sh("ip", "link", "add", "s0", "netns", SRV, "type", "veth", "peer", "name", "c0", "netns", CLI)
    sh("ip", "link", "add", "s1", "netns", SRV, "type", "veth", "peer", "name", "r0", "netns", RLY)
    sh("ip", "link", "add", "r1", "netns", RLY, "type", "veth", "peer", "name", "d0", "netns", CL2)
    sh("ip", "addr", "add", "10.69.0.1/24", "dev", "s0", ns=SRV)
    sh("ip", "addr", "add", "10.68.0.1/24", "dev", "s1", ns=SRV)
    sh("ip", "addr", "add", "10.68.0.2/24", "dev", "r0", ns=RLY)
    sh("ip", "addr", "add", "10.70.0.1/24", "dev", "r1", ns=RLY)
    for ns, dev in ((SRV, "s0"), (SRV, "s1"), (CLI, "c0"), (RLY, "r0"), (RLY, "r1"), (CL2, "d0")):
        sh("ip", "link", "set", dev, "up", ns=ns)
    sh("ip", "route", "add", "10.70.0.0/24", "via", "10.68.0.2", ns=SRV)
    sh("sysctl", "-q", "-w", "net.ipv4.ip_forward=1", ns=RLY)


def remove_lab():
    for ns in (SRV, CLI, RLY, CL2):
        subprocess.run(["ip", "netns", "pids", ns], capture_output=True)
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True,
                              text=True).stdout.split()
        for p in pids:
            subprocess.run(["kill", "-9", p], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


UDHCPC_SCRIPT = """#!/bin/sh
# Records what udhcpc was told, one KEY=VALUE per line, for the bound/renew events.
case "$1" in
  bound|renew) env | grep -E '^(ip|subnet|router|siaddr|serverid|boot_file|bootfile|lease|mask)=' > "$OUT" ;;
esac
exit 0
"""

DHCLIENT_SCRIPT = """#!/bin/sh
# Appends "reason new_ip_address filename" for each dhclient event, and configures the
# interface as dhclient-script would (the RELEASE goes out from the bound address).
echo "$reason $new_ip_address $new_filename" >> "@OUT@"
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT) ip addr flush dev "$interface"; ip addr add "$new_ip_address/24" dev "$interface" ;;
  RELEASE|EXPIRE|FAIL|STOP) ip addr flush dev "$interface" ;;
esac
exit 0
"""


def setUpModule():
    why = can_run()
    if why:
        raise unittest.SkipTest(why)
    remove_lab()
    make_lab()


def tearDownModule():
    remove_lab()


def admin_get(port, path):
    r = sh("curl", "-s", "-o", "-", "-w", "\n%{http_code}", f"http://127.0.0.1:{port}{path}",
           ns=SRV, check=False)
    if r.returncode != 0:
        return 0, {}
    body, _, code = r.stdout.rpartition("\n")
    try:
        return int(code), json.loads(body) if body.startswith("{") else body
    except ValueError:
        return int(code), body


def write_udhcpc_script(tmp):
    script = os.path.join(tmp, "udhcpc.sh")
    with open(script, "w") as f:
        f.write(UDHCPC_SCRIPT)
    os.chmod(script, 0o755)
    return script


def udhcpc(tmp, *opts, ns=CLI, iface="c0"):
    """Runs busybox udhcpc until it has a lease; returns what its script was told."""
    out = os.path.join(tmp, f"udhcpc-{time.monotonic_ns()}.env")
    sh("busybox", "udhcpc", "-i", iface, "-f", "-q", "-n", "-t", "5", "-T", "1",
       "-s", write_udhcpc_script(tmp), *opts, ns=ns, env=dict(os.environ, OUT=out), timeout=30)
    with open(out) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)


class Netboot(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="neco-netboot-")
        wrapper = os.path.join(cls.tmp, "neco-in-ns")
        with open(wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec ip netns exec {SRV} {os.path.abspath(NECO)} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        cls.tftp_root = os.path.join(cls.tmp, "tftp")
        os.makedirs(os.path.join(cls.tftp_root, "boot"))
        cls.payload = os.urandom(300_000)
        with open(os.path.join(cls.tftp_root, "boot", "test.bin"), "wb") as f:
            f.write(cls.payload)
        cls.agent = Agent(wrapper)
        cls.agent.set_modules(f"""modules:
  netboot:
    tftp:
      root_dir: {cls.tftp_root}
    dhcp:
      lease_time: 10m
      subnets:
        - subnet: 10.69.0.0/24
          range: 10.69.0.100-10.69.0.150
          routers: [10.69.0.1]
          dns_servers: [10.69.0.53]
          domain: boot.example
        - subnet: 10.70.0.0/24
          range: 10.70.0.100-10.70.0.110
          routers: [10.70.0.1]
    http:
      url: {BOOT_URL}
    boot:
      ipxe_script_url: "{SCRIPT_URL}"
""")
        # The admin and metrics endpoints are inside the server namespace: the harness's HTTP
        # client cannot reach them, so the agent is started without its health wait.
        cls.agent.start(wait=False)
        if not wait_for(lambda: cls.admin_get("/healthz")[0] == 200, timeout=20):
            raise RuntimeError("agent did not come up:\n" + cls.agent.output())
        if not wait_for(lambda: cls.admin_get("/v1/netboot/leases")[1].get("answering"), 20):
            raise RuntimeError("DHCP never answered:\n" + cls.agent.output())

    @classmethod
    def tearDownClass(cls):
        try:
            cls.agent.stop()
        finally:
            cls.agent.cleanup()
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def admin_get(cls, path):
        return admin_get(cls.agent.admin_port, path)

    def metrics(self):
        return admin_get(self.agent.metrics_port, "/metrics")[1]

    def udhcpc(self, *opts, ns=CLI, iface="c0"):
        return udhcpc(self.tmp, *opts, ns=ns, iface=iface)

    def test_pxe_clients_get_address_and_boot_file(self):
        # UEFI x64 PXE ROM: option 93 = 7, vendor class PXEClient → ipxe.efi over TFTP from us.
        env = self.udhcpc("-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007")
        ip = env["ip"]
        self.assertRegex(ip, r"^10\.69\.0\.(1[0-4][0-9]|150)$")
        self.assertEqual(env.get("boot_file"), "ipxe.efi")
        self.assertEqual(env.get("siaddr"), "10.69.0.1")
        self.assertEqual(env.get("serverid"), "10.69.0.1")
        self.assertEqual(env.get("router"), "10.69.0.1")
        self.assertEqual(env.get("subnet"), "255.255.255.0")
        self.assertEqual(env.get("lease"), "600")
        # Same client (same MAC) again: the same address.
        self.assertEqual(self.udhcpc("-V", "PXEClient:Arch:00007:UNDI:003016",
                                     "-x", "0x5d:0007")["ip"], ip)
        # BIOS PXE ROM → undionly.kpxe.
        env = self.udhcpc("-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000")
        self.assertEqual(env.get("boot_file"), "undionly.kpxe")
        # iPXE itself (user class "iPXE") → the script URL, which ends the chainload loop.
        env = self.udhcpc("-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007",
                          "-x", "0x4d:69505845")
        self.assertEqual(env.get("bootfile") or env.get("boot_file"), SCRIPT_URL)
        # UEFI HTTP boot (arch 0x10, HTTPClient) → the URL.
        env = self.udhcpc("-V", "HTTPClient:Arch:00016:UNDI:003001", "-x", "0x5d:0010")
        # Not configured: the boot server's own copy of Debian's ipxe.efi.
        self.assertEqual(env.get("bootfile") or env.get("boot_file"), BOOT_URL + "/boot/ipxe.efi")
        # A plain client: an address and no boot file.
        env = self.udhcpc()
        self.assertNotIn("boot_file", env)
        # The lease is in the table, bound, with the client's MAC.
        _, leases = self.admin_get("/v1/netboot/leases")
        bound = [l for l in leases["leases"] if l["state"] == "bound"]
        self.assertIn(ip, [l["address"] for l in bound])

    def test_relayed_client_gets_an_address_of_its_subnet(self):
        relay = shutil.which("dhcrelay") or "/usr/sbin/dhcrelay"
        if not os.path.exists(relay):
            self.skipTest("isc-dhcp-relay is not installed")
        pidfile = os.path.join(self.tmp, "dhcrelay.pid")
        proc = subprocess.Popen(["ip", "netns", "exec", RLY, relay, "-4", "-d", "-q",
                                 "-pf", pidfile, "-iu", "r0", "-id", "r1", "10.68.0.1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            env = self.udhcpc("-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007",
                              ns=CL2, iface="d0")
            self.assertRegex(env["ip"], r"^10\.70\.0\.1(0[0-9]|10)$")
            self.assertEqual(env.get("router"), "10.70.0.1")
            self.assertEqual(env.get("boot_file"), "ipxe.efi")
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    def test_dhclient_init_renew_release_init_reboot(self):
        dhclient = shutil.which("dhclient") or "/usr/sbin/dhclient"
        if not os.path.exists(dhclient):
            self.skipTest("isc-dhcp-client is not installed")
        out = os.path.join(self.tmp, "dhclient.log")
        script = os.path.join(self.tmp, "dhclient.sh")
        with open(script, "w") as f:
            f.write(DHCLIENT_SCRIPT.replace("@OUT@", out))  # dhclient clears the environment
        os.chmod(script, 0o755)
        leases = os.path.join(self.tmp, "dhclient.leases")
        pid = os.path.join(self.tmp, "dhclient.pid")
        # T1 of 2 s instead of the server's 5 min, so the backgrounded client RENEWs within the
        # test: a unicast REQUEST from its bound address with ciaddr set.
        conf = os.path.join(self.tmp, "dhclient.conf")
        with open(conf, "w") as f:
            f.write("supersede dhcp-renewal-time 2;\n")
        env = dict(os.environ, OUT=out)
        base = [dhclient, "-4", "-1", "-v", "-cf", conf, "-sf", script, "-lf", leases, "-pf", pid]
        # INIT: DISCOVER/OFFER/REQUEST/ACK.
        sh(*base, "c0", ns=CLI, env=env, timeout=60)
        with open(out) as f:
            events = f.read().split("\n")
        bound = [e.split() for e in events if e.startswith("BOUND")]
        self.assertTrue(bound, events)
        address = bound[-1][1]
        self.assertTrue(address.startswith("10.69.0."), address)
        # RENEW: the daemon asks the server directly and keeps its address.
        def renewed():
            with open(out) as f:
                return [e.split() for e in f.read().split("\n") if e.startswith("RENEW")]
        self.assertTrue(wait_for(lambda: renewed(), timeout=15), "no RENEW")
        self.assertEqual(renewed()[0][1], address)
        # RELEASE: the server marks the lease released.
        sh(dhclient, "-4", "-r", "-sf", script, "-lf", leases, "-pf", pid, "c0", ns=CLI, env=env,
           timeout=60)
        self.assertTrue(wait_for(lambda: any(
            l["address"] == address and l["state"] == "released"
            for l in self.admin_get("/v1/netboot/leases")[1]["leases"]), timeout=5))
        # INIT-REBOOT: dhclient asks for its remembered address first (REQUEST without server
        # id) and gets the same one back.
        open(out, "w").close()
        sh(*base, "c0", ns=CLI, env=env, timeout=60)
        with open(out) as f:
            events = f.read().split("\n")
        got = [e.split() for e in events if e.startswith(("REBOOT", "BOUND"))]
        self.assertTrue(got, events)
        self.assertEqual(got[-1][1], address)
        sh(dhclient, "-4", "-r", "-sf", script, "-lf", leases, "-pf", pid, "c0", ns=CLI, env=env,
           check=False, timeout=60)

    def test_malformed_packets_are_dropped_and_counted(self):
        send = ("import socket,sys\n"
                "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                "s.setsockopt(socket.SOL_SOCKET,socket.SO_BROADCAST,1)\n"
                "for p in (b'short', b'\\x01\\x01\\x06\\x00'+b'\\x00'*232+b'JUNK',\n"
                "          b'\\x01\\x01\\x06\\x00'+b'\\x00'*232+bytes([99,130,83,99,53,1,1,61,9,1])):\n"
                "    s.sendto(p, ('10.69.0.1', 67))\n")
        # The sender needs an address and a route (outside the dynamic range).
        sh("ip", "addr", "add", "10.69.0.99/24", "dev", "c0", ns=CLI)
        try:
            sh("python3", "-c", send, ns=CLI)
        finally:
            sh("ip", "addr", "flush", "dev", "c0", ns=CLI)
        for reason in ("truncated_header", "bad_magic", "option_overrun"):
            self.assertTrue(wait_for(lambda r=reason: re.search(
                r'neco_netboot_dhcp_dropped_total\{reason="%s"\} [1-9]' % r, self.metrics()),
                timeout=5), reason)
        # And the server still answers.
        self.assertIn("ip", self.udhcpc())


    def test_tftp_serves_the_boot_files(self):
        # The firmware's next step after the OFFER: fetch the boot file from siaddr by TFTP.
        sh("ip", "addr", "add", "10.69.0.97/24", "dev", "c0", ns=CLI)
        try:
            out = os.path.join(self.tmp, "fetched.bin")
            sh("curl", "-s", "--tftp-blksize", "1468", "-o", out,
               "tftp://10.69.0.1/boot/test.bin", ns=CLI)
            with open(out, "rb") as f:
                self.assertEqual(f.read(), self.payload)
            if os.path.exists("/usr/lib/ipxe/undionly.kpxe"):  # Debian's ipxe package
                sh("curl", "-s", "-o", out, "tftp://10.69.0.1/undionly.kpxe", ns=CLI)
                with open(out, "rb") as f, open("/usr/lib/ipxe/undionly.kpxe", "rb") as g:
                    self.assertEqual(f.read(), g.read())
            # Traversal is refused.
            r = sh("curl", "-s", "-o", out, "tftp://10.69.0.1/../etc/passwd", ns=CLI,
                   check=False)
            self.assertNotEqual(r.returncode, 0)
        finally:
            sh("ip", "addr", "flush", "dev", "c0", ns=CLI)
        self.assertRegex(self.metrics(), r"neco_netboot_tftp_transfers_completed_total [1-9]")


    def neco(self, *args, check=True):
        """The real CLI against the agent's admin endpoint, inside the server namespace."""
        return sh(os.path.abspath(NECO), *args, "--admin", f"http://127.0.0.1:{self.agent.admin_port}",
                  ns=SRV, check=check, timeout=60)

    def boot_get(self, path, *curl_args):
        """GET from the boot server as a booting machine would: from the client namespace."""
        out = os.path.join(self.tmp, f"boot-{time.monotonic_ns()}")
        r = sh("curl", "-s", "-o", out, "-w", "%{http_code}", *curl_args, BOOT_URL + path,
               ns=CLI, check=False)
        body = b""
        if os.path.exists(out):
            with open(out, "rb") as f:
                body = f.read()
        return int(r.stdout or 0), body

    def test_http_boot_flow(self):
        # The client namespace talks HTTP from a static address (DHCP tests flush it after).
        sh("ip", "addr", "add", "10.69.0.98/24", "dev", "c0", ns=CLI)
        self.addCleanup(sh, "ip", "addr", "del", "10.69.0.98/24", "dev", "c0", ns=CLI,
                        check=False)
        # The operator's side, through the CLI: IPAM, a machine, assets, its role's template.
        ipam = os.path.join(self.tmp, "ipam.json")
        with open(ipam, "w") as f:
            json.dump(IPAM, f)
        self.neco("ipam", "set", ipam)
        spec = os.path.join(self.tmp, "machine.json")
        with open(spec, "w") as f:
            json.dump({"serial": "NB0001", "rack": 1, "role": "worker", "bmc_type": "IPMI-2.0",
                       "labels": {"zone": "z1"}}, f)
        self.neco("machines", "register", spec)
        machine = json.loads(self.neco("machines", "get", "NB0001", "--json").stdout)
        node_ip = machine["ipv4"][0]["address"]
        kernel, initrd = os.urandom(700_000), os.urandom(2_500_000)
        for name, data in (("vmlinuz", kernel), ("initrd.img", initrd)):
            path = os.path.join(self.tmp, name)
            with open(path, "wb") as f:
                f.write(data)
            self.neco("assets", "upload", name, path)
        tpl = os.path.join(self.tmp, "worker.json")
        with open(tpl, "w") as f:
            json.dump({"kind": "ignition", "config": IGNITION, "kernel": "vmlinuz",
                       "initrds": ["initrd.img"], "cmdline": "console=ttyS0 neco.rack={{ rack }}"},
                      f)
        self.neco("templates", "set", "worker", tpl)
        # A template that does not render is refused with the reason, and nothing changes.
        with open(tpl, "w") as f:
            json.dump({"kind": "ignition", "config": "{{ nope }}", "kernel": "vmlinuz"}, f)
        r = self.neco("templates", "set", "worker", tpl, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("nope", r.stderr)

        listed = json.loads(self.neco("templates", "list", "--json").stdout)["templates"]
        self.assertEqual([t["role"] for t in listed], ["worker"])
        rendered = json.loads(self.neco("templates", "render", "NB0001", "--json").stdout)
        self.assertIn(f"{BOOT_URL}/boot/assets/vmlinuz", rendered["script"])
        self.assertEqual(json.loads(rendered["config"])["x-neco"]["serial"], "NB0001")

        # The machine's side, from the client namespace: what iPXE fetches, in order.
        code, entry = self.boot_get("/boot/ipxe.ipxe")
        self.assertEqual(code, 200)
        self.assertIn(b"chain --autofree " + BOOT_URL.encode() +
                      b"/boot/machines/${serial:uristring}/ipxe", entry)
        code, script = self.boot_get("/boot/machines/NB0001/ipxe")
        self.assertEqual(code, 200)
        script = script.decode()
        self.assertTrue(script.startswith("#!ipxe\n"), script)
        self.assertIn(f"kernel {BOOT_URL}/boot/assets/vmlinuz initrd=initrd.img console=ttyS0 "
                      f"neco.rack=1 ignition.config.url={BOOT_URL}/boot/machines/NB0001/config",
                      script)
        self.assertIn(f"initrd {BOOT_URL}/boot/assets/initrd.img", script)
        code, config = self.boot_get("/boot/machines/NB0001/config")
        self.assertEqual(code, 200, self.agent.output()[-3000:])
        doc = json.loads(config)
        self.assertEqual(doc["x-neco"], {"serial": "NB0001", "ip": node_ip, "zone": "z1"})
        self.assertEqual(doc["storage"]["files"][0]["contents"]["source"], "data:,1")
        # Kernel and initrd: whole, a range, HEAD.
        self.assertEqual(self.boot_get("/boot/assets/vmlinuz"), (200, kernel))
        self.assertEqual(self.boot_get("/boot/assets/initrd.img", "-r", "1000-1999"),
                         (206, initrd[1000:2000]))
        r = sh("curl", "-s", "-I", BOOT_URL + "/boot/assets/initrd.img", ns=CLI)
        self.assertIn(f"content-length: {len(initrd)}", r.stdout.lower())
        if os.path.exists("/boot/ipxe.efi"):
            with open("/boot/ipxe.efi", "rb") as f:
                self.assertEqual(self.boot_get("/boot/ipxe.efi"), (200, f.read()))
        # A machine that is not registered is told so and retries; a missing asset is 404.
        code, waiting = self.boot_get("/boot/machines/UNKNOWN9/ipxe")
        self.assertEqual(code, 200)
        self.assertIn(b"no machine", waiting)
        self.assertIn(b"sleep", waiting)
        self.assertEqual(self.boot_get("/boot/assets/nothing")[0], 404)
        self.assertEqual(self.boot_get("/boot/machines/UNKNOWN9/config")[0], 404)


class LeaderChange(unittest.TestCase):
    """Two controllers on one etcd in the server namespace, both bound to port 67 on the same
    link: only the leader answers; after kill -9 of the leader the other takes over with the
    lease table from the store, and no address is handed to two clients."""

    def setUp(self):
        if shutil.which("etcd") is None:
            self.skipTest("etcd is not installed")
        self.tmp = tempfile.mkdtemp(prefix="neco-netboot-lc-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        client, peer = free_port(), free_port()
        self.etcd = subprocess.Popen(
            ["ip", "netns", "exec", SRV, "etcd", "--name", "e0",
             "--data-dir", os.path.join(self.tmp, "etcd"),
             "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
             "--initial-cluster", f"e0=http://127.0.0.1:{peer}",
             "--heartbeat-interval", "50", "--election-timeout", "500"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(self.stop_proc, self.etcd)
        self.assertTrue(wait_for(lambda: admin_get(client, "/health")[0] == 200, timeout=20))
        self.controllers = []
        for i in range(2):
            c = {"name": f"c{i}", "admin": free_port(), "metrics": free_port(),
                 "api": free_port()}
            role = os.path.join(self.tmp, f"c{i}.yaml")
            with open(role, "w") as f:
                f.write(f"""node:
  name: c{i}
controller: true
state_dir: {os.path.join(self.tmp, f"c{i}")}
store:
  backend: etcd
  etcd:
    endpoints: [http://127.0.0.1:{client}]
  election_ttl: 2s
admin:
  port: {c['admin']}
metrics:
  port: {c['metrics']}
cluster:
  api:
    port: {c['api']}
modules:
  netboot:
    tftp:
      enabled: false
    http:
      enabled: false
    dhcp:
      interface: s0
      subnets:
        - subnet: 10.69.0.0/24
          range: 10.69.0.200-10.69.0.203
""")
            log = open(os.path.join(self.tmp, f"c{i}.log"), "wb")
            self.addCleanup(log.close)
            c["proc"] = subprocess.Popen(
                ["ip", "netns", "exec", SRV, os.path.abspath(NECO), "agent", "--role", role],
                stdout=log, stderr=log)
            self.addCleanup(self.stop_proc, c["proc"])
            self.controllers.append(c)

    @staticmethod
    def stop_proc(p):
        if p.poll() is None:
            p.kill()
            p.wait()

    def answering(self):
        return [c for c in self.controllers if c["proc"].poll() is None and
                admin_get(c["admin"], "/v1/netboot/leases")[1].get("answering")]

    def leases(self, c):
        return {l["address"]: l for l in admin_get(c["admin"], "/v1/netboot/leases")[1]["leases"]}

    def test_leases_survive_a_leader_change(self):
        self.assertTrue(wait_for(lambda: len(self.answering()) == 1, timeout=30),
                        "exactly one controller must answer")
        leader = self.answering()[0]
        # Two clients (told apart by client id) bind through the leader.
        a = udhcpc(self.tmp, "-x", "0x3d:01aa0000000001")["ip"]
        b = udhcpc(self.tmp, "-x", "0x3d:01aa0000000002")["ip"]
        self.assertNotEqual(a, b)
        # kill -9 the leader: the other controller takes over with the table from the store.
        leader["proc"].kill()
        leader["proc"].wait()
        self.assertTrue(wait_for(lambda: len(self.answering()) == 1, timeout=20),
                        "the standby must take over")
        follower = self.answering()[0]
        self.assertIsNot(follower, leader)
        table = self.leases(follower)
        for ip in (a, b):
            self.assertIn(ip, table)
            self.assertEqual(table[ip]["state"], "bound")
        # The old clients keep their addresses; a new one gets neither of them.
        self.assertEqual(udhcpc(self.tmp, "-x", "0x3d:01aa0000000001")["ip"], a)
        c = udhcpc(self.tmp, "-x", "0x3d:01aa0000000003")["ip"]
        self.assertNotIn(c, (a, b))


if __name__ == "__main__":
    NECO = sys.argv.pop(1)
    unittest.main(verbosity=2)
