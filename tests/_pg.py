"""A throwaway PostgreSQL cluster for the tests, `.ci/run` and `bench/pg.py`.

`initdb` into a temporary directory as an unprivileged user (PostgreSQL refuses to run as root),
`pg_ctl start` on a free port with its unix socket in that directory, and `pg_ctl stop` at the
end. As a script: `python tests/_pg.py start DIR` prints the admin URL; `python tests/_pg.py stop DIR`.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, urlsplit

SUPERUSER = "roastpg"  # the cluster's bootstrap superuser (a PostgreSQL role, trusted on the socket)


class Unavailable(Exception):
    """No PostgreSQL server can be started here (the reason says why)."""


def find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def server_user() -> str | None:
    """The OS user the server runs as: ourselves unless root; as root, `roastpg` or `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("roastpg", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise Unavailable("running as root, and there is no unprivileged user (roastpg or nobody) to run PostgreSQL as")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def socket_url(directory: str | Path, port: int, dbname: str = "postgres", user: str = SUPERUSER) -> str:
    return f"postgresql://{user}@/{dbname}?host={quote(str(directory))}&port={port}"


def with_database(url: str, dbname: str) -> str:
    """The same server and credentials, another database."""
    return urlsplit(url)._replace(path="/" + dbname).geturl()


class Cluster:
    """A running cluster: its directory, port, socket URL (trust) and OS user."""

    def __init__(self, base: Path, port: int, user: str | None, listen: str) -> None:
        self.base, self.port, self.user, self.listen = base, port, user, listen
        self.admin_url = socket_url(base, port)

    @property
    def data(self) -> Path:
        return self.base / "data"

    def _as_user(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.user, "--", *argv] if self.user else argv

    def stop(self) -> None:
        pg_ctl = find_bin("pg_ctl")
        if pg_ctl and (self.data / "postmaster.pid").exists():
            subprocess.run(self._as_user([pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"]),
                           capture_output=True, check=False, timeout=60, cwd="/")
        shutil.rmtree(self.base, ignore_errors=True)


def start(base: str | Path | None = None, *, listen: str = "127.0.0.1", port: int | None = None,
          hba: tuple[str, ...] = ("host all all 127.0.0.1/32 scram-sha-256",),
          settings: dict[str, str] | None = None) -> Cluster:
    """initdb + pg_ctl start; raises Unavailable with the reason when it cannot."""
    initdb, pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise Unavailable("initdb/pg_ctl not found (install PostgreSQL, or set ROAST_TEST_PG_URL)")
    user = server_user()
    base = Path(base) if base is not None else Path(tempfile.mkdtemp(prefix="roast-pg-"))
    base.mkdir(parents=True, exist_ok=True)
    if user:
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    base.chmod(0o700)
    cluster = Cluster(base, port or free_port(), user, listen)
    run = cluster._as_user
    made = subprocess.run(run([initdb, "-D", str(cluster.data), "-U", SUPERUSER, "-A", "trust", "-E", "UTF8",
                               "--no-sync", "--locale=C"]), capture_output=True, text=True, check=False,
                          timeout=120, cwd="/")
    if made.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise Unavailable(f"initdb failed: {made.stderr.strip()[-500:]}")
    with open(cluster.data / "pg_hba.conf", "w") as handle:
        handle.write("local all all trust\n" + "".join(line + "\n" for line in hba))
    conf = {"listen_addresses": f"'{listen}'", "port": str(cluster.port), "unix_socket_directories": f"'{base}'",
            "max_connections": "300", "shared_buffers": "32MB", "fsync": "off", "full_page_writes": "off",
            "synchronous_commit": "off", "log_min_messages": "warning", **(settings or {})}
    with open(cluster.data / "postgresql.conf", "a") as handle:
        handle.write("".join(f"{key} = {value}\n" for key, value in conf.items()))
    started = subprocess.run(run([pg_ctl, "-D", str(cluster.data), "-l", str(base / "server.log"), "-w", "-t", "60",
                                  "start"]), capture_output=True, text=True, check=False, timeout=120, cwd="/")
    if started.returncode != 0:
        log = (base / "server.log").read_text(errors="replace")[-800:] if (base / "server.log").exists() else ""
        cluster.stop()
        raise Unavailable(f"pg_ctl start failed: {started.stderr.strip()[-300:]} {log}")
    return cluster


def wait_ready(url: str, timeout: float = 30.0) -> None:
    import psycopg

    end = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(url, connect_timeout=5).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python tests/_pg.py start|stop DIR", file=sys.stderr)
        return 2
    base = Path(argv[1])
    if argv[0] == "start":
        try:
            cluster = start(base)
        except Unavailable as err:
            print(f"cannot start PostgreSQL: {err}", file=sys.stderr)
            return 1
        (base / "url").write_text(cluster.admin_url)
        print(cluster.admin_url)
        return 0
    user = None
    if base.exists():
        user = pwd.getpwuid(base.stat().st_uid).pw_name if os.geteuid() == 0 and base.stat().st_uid else None
    Cluster(base, 0, user, "").stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
