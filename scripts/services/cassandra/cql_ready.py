"""Waits until a Cassandra node answers a CQL query; used by cassandra.sh start and status.

An open native port is not enough: the node must also have its system keyspaces loaded and accept queries,
which only a real query proves. Prints the node's release_version on success.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time


def query_release_version(host: str, port: int, connect_timeout_s: float) -> str:
    from cassandra.cluster import Cluster  # imported late so --help works without the driver

    cluster = Cluster(
        contact_points=[host],
        port=port,
        connect_timeout=connect_timeout_s,
        control_connection_timeout=connect_timeout_s,
    )
    try:
        session = cluster.connect()
        row = session.execute("SELECT release_version FROM system.local", timeout=connect_timeout_s).one()
        if row is None:
            raise RuntimeError("system.local returned no row")
        return str(row.release_version)
    finally:
        cluster.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9042)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to keep trying")
    args = parser.parse_args(argv)

    # The driver logs every refused connection while the node starts; only the final verdict matters here.
    logging.getLogger("cassandra").setLevel(logging.CRITICAL)
    try:
        import cassandra  # noqa: F401
    except ImportError:
        print("cassandra-driver is not installed (pip install cassandra-driver)", file=sys.stderr)
        return 2

    deadline = time.monotonic() + args.timeout
    last_error: Exception | None = None
    while True:
        try:
            print(query_release_version(args.host, args.port, connect_timeout_s=5.0))
            return 0
        except Exception as exc:  # any failure means "not ready yet"; the last one is reported
            last_error = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    print(
        f"no CQL answer from {args.host}:{args.port} within {args.timeout:.0f}s: {last_error!r}",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
