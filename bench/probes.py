"""Probe throughput: 1,000 probes against one cluster's library_app, as a run sends them.

    .venv/bin/python bench/probes.py [--probes 1000]     goal: under 2 s

One real library_app process on loopback; one round of a suite of N probes (an authz matrix
cell repeated), sent by `probes.run_round` through one keep-alive client, at most
`PARALLEL_PROBES` at a time. For comparison, the same round with keep-alive off (a new
connection per probe, which is what every round cost before). Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from scale import TOKENS, library_apps  # noqa: E402

from wavegate.config import checks  # noqa: E402
from wavegate.engine import credentials, probes  # noqa: E402
from wavegate.outputs import logs  # noqa: E402


def suite(count: int) -> checks.Suite:
    lines = ["principals: {alice: {token_env: LIBRARY_TOKEN_ALICE}, bob: "
             "{token_env: LIBRARY_TOKEN_BOB}}", "checks:"]
    lines += [f"  - {{name: c{index}, as: alice, request: GET /api/spaces/space-eng}}"
              for index in range(count - 1)]
    lines.append("  - {name: deny, authz_matrix: {principals: [bob], resources: {eng: "
                 "{request: GET /api/spaces/space-eng, marker: space-eng}, fin: {request: "
                 "GET /api/spaces/space-finance, marker: space-finance}}, allow: {bob: [fin]}}}")
    loaded = checks.load("\n".join(lines) + "\n", Path("bench-probes.yaml"))
    return checks.Suite(loaded.principals, loaded.probes[:count], loaded.file)


def timed_round(url: str, probes_suite: checks.Suite, *, keep_alive: bool) -> tuple[float, int]:
    tokens = credentials.resolve(probes_suite)
    limits = None if keep_alive else httpx.Limits(max_keepalive_connections=0)
    client = probes.new_client(url)
    if limits is not None:
        client.close()
        client = httpx.Client(base_url=url, timeout=probes.REQUEST_TIMEOUT, limits=limits)
    with client:
        started = time.monotonic()
        result = probes.run_round(url, probes_suite, tokens, deadline=5.0, client=client)
        elapsed = time.monotonic() - started
    return elapsed, result.count(probes.Outcome.PASS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=1000)
    args = parser.parse_args()
    logs.configure(fmt="json", stream=open(os.devnull, "w"))  # noqa: SIM115
    for variable in TOKENS:
        os.environ.setdefault(variable, secrets.token_urlsafe(16))
    probes_suite = suite(args.probes)
    with library_apps(("1.0.0",)) as servers:
        url = servers["1.0.0"]
        timed_round(url, suite(20), keep_alive=True)  # warm the server up
        kept, passed = timed_round(url, probes_suite, keep_alive=True)
        fresh, _ = timed_round(url, probes_suite, keep_alive=False)
    print(f"{args.probes} probes, one round, keep-alive:     {kept:6.2f}s  (goal < 2 s; "
          f"{passed} passed)")
    print(f"{args.probes} probes, one round, new connections: {fresh:6.2f}s")
    print(json.dumps({"probes": args.probes, "keep_alive_s": round(kept, 3),
                      "new_connections_s": round(fresh, 3), "passed": passed}))


if __name__ == "__main__":
    main()
