"""Three real mariadbd instances for the mysql module's integration tests: m0 the primary, m1
and m2 its semi-sync replicas, on free loopback ports under a temp dir, configured the way
modules/mysql/server_config.cpp renders option files (fenced boot, GTID strict, semi-sync).
Users: root (unix socket), admin/adminpw (ALL, what the controller uses), repl/replpw
(REPLICATION SLAVE) and app/apppw (SELECT, INSERT on database t only: read_only stops it, so a
client writing as app can only write to the writable primary). Table t.x holds one row.
Shared by test_mysql.py and test_mysql_leader_kill.py."""

import os
import shutil
import signal
import subprocess

from neco_harness import free_port, wait_for

SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
MARIADBD = shutil.which("mariadbd", path=SBIN)
INSTALL_DB = shutil.which("mariadb-install-db", path=SBIN)
CLIENT = shutil.which("mariadb", path=SBIN)
SMALL = ["--innodb-buffer-pool-size=32M", "--innodb-log-file-size=4M"]
NAMES = ["m0", "m1", "m2"]


def available():
    """Whether mariadbd, mariadb-install-db and the mariadb client are all installed."""
    return bool(MARIADBD and INSTALL_DB and CLIENT)


def my_cnf(server_id, port, sock, datadir):
    # What modules/mysql/server_config.cpp renders (fenced boot, GTID strict, semi-sync).
    return f"""[mariadbd]
server_id = {server_id}
port = {port}
bind_address = 127.0.0.1
socket = {sock}
datadir = {datadir}
gtid_domain_id = 0
gtid_strict_mode = ON
log_bin = mysql-bin
log_bin_index = mysql-bin.index
relay_log = relay-bin
relay_log_index = relay-bin.index
log_slave_updates = ON
binlog_format = ROW
sync_binlog = 1
innodb_flush_log_at_trx_commit = 1
read_only = ON
skip_slave_start = ON
relay_log_recovery = ON
init_rpl_role = SLAVE
rpl_semi_sync_master_enabled = OFF
rpl_semi_sync_slave_enabled = ON
rpl_semi_sync_master_wait_point = AFTER_SYNC
rpl_semi_sync_master_timeout = 18446744073709551615
rpl_semi_sync_master_wait_no_slave = ON
slave_net_timeout = 4
"""


class Server:
    def __init__(self, root, index):
        self.name = NAMES[index]
        self.dir = os.path.join(root, self.name)
        self.sock = os.path.join(self.dir, "mariadbd.sock")
        self.port = free_port()
        self.server_id = index + 1
        self.proc = None

    def start(self):
        log = open(os.path.join(self.dir, "error.log"), "ab")
        self.proc = subprocess.Popen(
            [MARIADBD, "--defaults-file=" + os.path.join(self.dir, "my.cnf"), "--user=root",
             "--skip-name-resolve", "--pid-file=" + os.path.join(self.dir, "mariadbd.pid"),
             "--tmpdir=" + self.dir]
            + SMALL, stdout=log, stderr=log)
        log.close()
        if not wait_for(lambda: self.sql("SELECT 1", check=False).returncode == 0, timeout=30,
                        interval=0.1):
            raise RuntimeError(f"mariadbd {self.name} did not start:\n" + self.error_log())

    def error_log(self):
        with open(os.path.join(self.dir, "error.log"), errors="replace") as f:
            return f.read()[-3000:]

    def sql(self, statement, check=True):
        r = subprocess.run([CLIENT, "--no-defaults", "-uroot", "-S", self.sock, "-N", "-B",
                            "--connect-timeout=2", "-e", statement],
                           capture_output=True, text=True, timeout=20)
        if check and r.returncode != 0:
            raise RuntimeError(f"{self.name}: {statement}: {r.stderr}")
        return r

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def change_master(primary):
    return (f"CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={primary.port}, "
            "MASTER_USER='repl', MASTER_PASSWORD='replpw', MASTER_CONNECT_RETRY=1, "
            "MASTER_HEARTBEAT_PERIOD=1, MASTER_USE_GTID=slave_pos")


def start_cluster(root):
    """Creates and starts m0 (primary) and m1, m2 (semi-sync replicas) under `root`; returns
    the Server list. On error the servers started so far are in the exception's `servers`."""
    # Temporary files in the test's own directory: the shared /tmp is cleaned by others, and
    # a bootstrap whose temporary table vanished fails.
    seed = os.path.join(root, "seed")
    r = subprocess.run([INSTALL_DB, "--no-defaults", "--datadir=" + seed, "--tmpdir=" + root,
                        "--auth-root-authentication-method=normal", "--skip-test-db",
                        "--user=root"] + SMALL, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError("mariadb-install-db failed:\n" + r.stdout + r.stderr)
    servers = []
    try:
        for i in range(3):
            s = Server(root, i)
            shutil.copytree(seed, os.path.join(s.dir, "data"))
            with open(os.path.join(s.dir, "my.cnf"), "w") as f:
                f.write(my_cnf(s.server_id, s.port, s.sock, os.path.join(s.dir, "data")))
            servers.append(s)
        for s in servers:
            s.start()
            s.sql("SET SESSION sql_log_bin = 0; "
                  "CREATE USER 'admin'@'127.0.0.1' IDENTIFIED BY 'adminpw'; "
                  "GRANT ALL PRIVILEGES ON *.* TO 'admin'@'127.0.0.1' WITH GRANT OPTION; "
                  "CREATE USER 'repl'@'127.0.0.1' IDENTIFIED BY 'replpw'; "
                  "GRANT REPLICATION SLAVE ON *.* TO 'repl'@'127.0.0.1'; "
                  "CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'apppw'; "
                  "GRANT SELECT, INSERT ON t.* TO 'app'@'127.0.0.1'")
        primary = servers[0]
        # Semi-sync master on before the replicas connect, so they register as semi-sync.
        primary.sql("SET GLOBAL rpl_semi_sync_master_enabled = ON; SET GLOBAL read_only = OFF")
        for s in servers[1:]:
            s.sql(change_master(primary) + "; START SLAVE")
        ok = wait_for(lambda: primary.sql("SHOW STATUS LIKE 'Rpl_semi_sync_master_clients'")
                      .stdout.split()[1] == "2", timeout=20, interval=0.1)
        if not ok:
            raise RuntimeError("the replicas did not connect to the primary")
        primary.sql("CREATE DATABASE t; CREATE TABLE t.x (id INT PRIMARY KEY AUTO_INCREMENT, "
                    "v VARCHAR(16))")
        primary.sql("INSERT INTO t.x (v) VALUES ('first')")
    except Exception as e:
        e.servers = servers
        raise
    return servers


def cluster_section(servers, cred_dir, policy, interval="300ms", second_primary=False):
    """The role file's `modules:` section managing `servers` as cluster c1 (m0 declared
    primary), with credential files written to `cred_dir` and `policy` (a dict of policy
    fields, e.g. {"failure_confirm": "1s"}); interval None leaves the module's default."""
    for name, pw in (("admin.pw", "adminpw\n"), ("repl.pw", "replpw\n")):
        with open(os.path.join(cred_dir, name), "w") as f:
            f.write(pw)
    inst = ""
    for i, s in enumerate(servers):
        primary = "true" if i == 0 or (second_primary and i == 1) else "false"
        inst += (f"          - {{name: {s.name}, host: 127.0.0.1, port: {s.port}, "
                 f"primary: {primary}}}\n")
    pol = "".join(f"          {k}: {v}\n" for k, v in policy.items())
    every = f"    interval: {interval}\n" if interval is not None else ""
    return f"""modules:
  mysql:
{every}    clusters:
      - name: c1
        instances:
{inst}        credentials:
          admin_user: admin
          admin_password_file: {cred_dir}/admin.pw
          repl_user: repl
          repl_password_file: {cred_dir}/repl.pw
        policy:
{pol}"""
