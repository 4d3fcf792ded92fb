"""library_app: the sample workload wavegate deploys (README.md, "Why").

An HTTP service of Spaces, members and bearer tokens, stdlib only so a pod starts in well
under 100 ms. Layout, importing only downward:

- `spaces`: the dataset and the pure authorization rules (which spaces may a user list, read,
  find), including the deliberate regressions wavegate's checks must catch.
- `tokens`: who is calling, from `Authorization: Bearer ...`; never prints a token.
- `faults`: `LIBRARY_FAIL` failure injection, for testing the orchestrator, not the app.
- `http11`: a small HTTP/1.1 server, every connection a coroutine on one event loop.
- `server`: HTTP only: routes, status codes, JSON bodies; `make_server` for tests.
- `__main__`: flags and environment, the startup line, serving until SIGTERM.
"""
