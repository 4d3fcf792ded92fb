"""Webhook notifications: a JSON POST per run event, with a Slack-compatible `text` field.

Delivery happens on a background thread with retries, so a slow or dead receiver never blocks
or fails a run; at the end of the run the queue gets a few seconds to drain, then is dropped.
Webhook URLs often carry a secret (Slack's do), so they are registered with `redact`.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Mapping
from typing import Any

import httpx
import structlog
import tenacity

from wavegate import redact
from wavegate.config.fleet import Fleet
from wavegate.decide import ledger
from wavegate.errors import InputError

log = structlog.get_logger(__name__)
DRAIN_SECONDS = 5.0
_DONE = object()


def resolve_urls(fleet: Fleet, environ: Mapping[str, str] | None = None, *,
                 skip_unset: bool = False) -> list[str]:
    """Every webhook's URL from its variable; an unset one is an input error, or, with
    SKIP_UNSET (rollbacks: nothing may hold up an emergency), skipped with a warning."""
    env = os.environ if environ is None else environ
    urls = []
    for hook in fleet.webhooks:
        url = env.get(hook.url_env)
        if not url:
            error = InputError(f"variable {hook.url_env} is not set", file=fleet.path,
                               field="notify.webhooks.url_env")
            if not skip_unset:
                raise error
            log.warning("notify.skipped", detail=str(error))
            continue
        redact.register(url)
        urls.append(url)
    return urls


class Notifier:
    def __init__(self, urls: list[str], *, run_id: str, app: str, version: str | None) -> None:
        self.urls, self.run_id, self.app, self.version = urls, run_id, app, version
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._deliver, daemon=True, name="webhooks")
        if urls:
            self._thread.start()

    def send(self, event: str, text: str, **fields: Any) -> None:
        if not self.urls:
            return
        self._queue.put({"event": event, "run_id": self.run_id, "app": self.app,
                         "version": self.version, "at": ledger.now(), **fields,
                         "text": f"wavegate {self.app} {self.version or ''}: {text}"})

    def close(self) -> None:
        """Give pending notifications a few seconds; never hold the run longer."""
        if self.urls:
            self._queue.put(_DONE)
            self._thread.join(DRAIN_SECONDS)

    def _deliver(self) -> None:
        with httpx.Client(timeout=3.0) as client:
            while (payload := self._queue.get()) is not _DONE:
                for url in self.urls:
                    _post(client, url, redact.scrub_data(payload))


@tenacity.retry(stop=tenacity.stop_after_attempt(3),
                wait=tenacity.wait_exponential(multiplier=0.2, max=2.0),
                retry=tenacity.retry_if_exception_type(httpx.HTTPError), reraise=False,
                retry_error_callback=lambda state: log.warning(
                    "notify.failed", attempts=state.attempt_number))
def _post(client: httpx.Client, url: str, payload: Any) -> None:
    client.post(url, json=payload).raise_for_status()
