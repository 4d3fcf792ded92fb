"""Probe throughput: 1,000 probes against one cluster's library_app, as a run sends them.

    .venv/bin/python bench/probes.py [--probes 1000]     goal: under 2 s

One real library_app process on loopback; one round of a suite of N probes (an authz matrix
cell repeated), sent by `probes.run_round` through one keep-alive client, at most
`PARALLEL_PROBES` at a time, and the CPU it cost this process. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import time
from pathlib import Path

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
    # Each its own request (a query the app ignores): identical probes are sent only once.
    lines += [f"  - {{name: c{index}, as: alice, request: 'GET /api/spaces/space-eng?n={index}'}}"
              for index in range(count - 1)]
    lines.append("  - {name: deny, authz_matrix: {principals: [bob], resources: {eng: "
                 "{request: GET /api/spaces/space-eng, marker: space-eng}, fin: {request: "
                 "GET /api/spaces/space-finance, marker: space-finance}}, allow: {bob: [fin]}}}")
    loaded = checks.load("\n".join(lines) + "\n", Path("bench-probes.yaml"))
    return checks.Suite(loaded.principals, loaded.probes[:count], loaded.file)


def timed_round(url: str, probes_suite: checks.Suite) -> tuple[float, float, int]:
    """Wall seconds and CPU seconds of one round through a run's keep-alive pool."""
    tokens = credentials.resolve(probes_suite)
    client = probes.Client(url)
    try:
        started, cpu = time.monotonic(), time.process_time()
        result = probes.run_round(url, probes_suite, tokens, deadline=5.0, client=client)
        elapsed, cpu = time.monotonic() - started, time.process_time() - cpu
    finally:
        client.close()
    return elapsed, cpu, result.count(probes.Outcome.PASS)


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
        timed_round(url, suite(20))  # warm the server up
        elapsed, cpu, passed = timed_round(url, probes_suite)
    print(f"{args.probes} probes, one round, keep-alive: {elapsed:6.2f}s  (goal < 2 s; "
          f"{passed} passed; {1000 * cpu / args.probes:.2f} ms of CPU per probe here)")
    print(json.dumps({"probes": args.probes, "keep_alive_s": round(elapsed, 3),
                      "cpu_ms_per_probe": round(1000 * cpu / args.probes, 3),
                      "passed": passed}))


if __name__ == "__main__":
    main()
