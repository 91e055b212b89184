"""Issue 21: a PostgreSQL password never reaches an error message, however it is written.

Hand-written URLs often carry unencoded `%`, `@` or `#` in the password; libpq then either refuses
the URL (and psycopg's message quoted the password) or takes part of the password for a host (and
the connection error printed it). Real `roast` processes against the tests' PostgreSQL server.
"""
from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from conftest import run_cli


def _port(pg_server) -> int:
    if pg_server.cluster is not None:
        return int(pg_server.cluster.port)
    return int(urlsplit(pg_server.admin_url).port or 5432)


@pytest.mark.parametrize("password, secrets", [
    ("S3cret%Pass", ["S3cret", "Pass"]),           # not valid percent-encoding: libpq refuses the URL
    ("Tr0ub4dor%3&3", ["Tr0ub4dor", "&3"]),
    ("abc%zzSECRET", ["zzSECRET", "abc%"]),
    ("p@ss#SECRET", ["SECRET", "ss#", "ss@"]),      # libpq would read `ss#SECRET@127.0.0.1` as the host
])
def test_an_unencoded_password_is_never_printed(pg_server, tmp_path, password, secrets):
    url = f"postgresql://roast:{password}@127.0.0.1:{_port(pg_server)}/roastdb"
    for argv in (["sessions"], ["tick"]):
        proc = run_cli(*argv, cwd=tmp_path, env={"ROAST_STORE": url})
        assert proc.returncode == 2, proc.stderr
        for secret in secrets:
            assert secret not in proc.stderr + proc.stdout, (argv, proc.stderr)
        assert "roast:***@127.0.0.1" in proc.stderr and "percent-encoded" in proc.stderr


def test_an_encoded_password_that_is_refused_is_not_printed_either(pg_server, tmp_path):
    url = f"postgresql://nosuchrole:W1ld%40Pw%23x@127.0.0.1:{_port(pg_server)}/roastdb"
    proc = run_cli("sessions", cwd=tmp_path, env={"ROAST_STORE": url})
    assert proc.returncode == 4, proc.stderr
    for secret in ("W1ld", "Pw%23x", "Pw#x"):
        assert secret not in proc.stderr
