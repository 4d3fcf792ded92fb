"""Talking to many clusters at once, on a bounded number of threads.

Every command that asks each cluster something (connect, locks, status, history, checks,
rollback) asks them in parallel, a thread each, up to `MAX_WORKERS`: never a thread per
cluster of a large fleet, and enough that 1,000 clusters take a few round trips, not thirty.
A hung cluster holds one worker.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

__all__ = ["MAX_WORKERS", "pool"]

MAX_WORKERS = 128


def pool(clusters: int, *, name: str = "") -> ThreadPoolExecutor:
    """A pool for work on CLUSTERS clusters: a thread each, at most MAX_WORKERS."""
    return ThreadPoolExecutor(max_workers=max(1, min(clusters, MAX_WORKERS)),
                              thread_name_prefix=name)
