"""`python -m library_app --version X`: read flags and environment, serve until SIGTERM.

Exit codes: 0 after SIGTERM/SIGINT, 1 for `LIBRARY_FAIL=crash` or a port that cannot be
bound, 2 for bad configuration. Writes one startup line to stderr and never a token.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence

from library_app.server import App, LibraryServer


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    stop = _stop_on_signals()  # first, so a SIGTERM during startup still ends in a clean exit 0
    env = dict(os.environ) if env is None else env
    args = _parse_args(argv, env)
    try:
        app = App.from_env(args.version, env)
    except ValueError as e:
        return _fail(2, str(e))
    if app.faults.crash:
        return _fail(1, "LIBRARY_FAIL=crash, exiting before listening")
    try:
        server = LibraryServer((args.host, args.port), app)
    except OSError as e:
        return _fail(1, f"cannot listen on {args.host}:{args.port}: {e}")
    _serve_until(stop, server, app.version)
    return 0


def _parse_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="library_app", description=__doc__)
    parser.add_argument("--version", required=True, help="the release this process reports")
    parser.add_argument("--host", default=env.get("HOST", "127.0.0.1"), help="default: $HOST")
    parser.add_argument(
        "--port", type=_port, default=env.get("PORT", "8080"), help="default: $PORT or 8080"
    )
    return parser.parse_args(argv)


def _port(text: str) -> int:
    port = int(text)  # argparse turns the ValueError into a usage error
    if not 0 <= port <= 65535:
        raise ValueError(text)
    return port


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    return stop


def _serve_until(stop: threading.Event, server: LibraryServer, version: str) -> None:
    # serve_forever runs in a thread because shutdown() from a signal handler on the serving
    # thread would deadlock; the main thread only waits for the signal.
    serving = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="http"
    )
    serving.start()
    host, port = server.server_address[:2]
    print(f"library_app {version} listening on http://{host!s}:{port}", file=sys.stderr, flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    serving.join()


def _fail(code: int, message: str) -> int:
    print(f"library_app: {message}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
