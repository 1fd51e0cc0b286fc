"""A realistic validate mix for any deployment.

    QG_TOKEN=exo_at_... QG_API_KEYS=keys.txt locust -f benchmarks/locustfile.py --host https://gateway:8443

QG_API_KEYS: a file with one API key per line (valid keys; some may be at their limits).
QG_LIMITED_KEYS (optional): a file of keys known to be exhausted, to exercise 429 answers.
Mix: 70 % consume, 15 % check-only, 10 % unknown keys, 5 % keys at their limits.
"""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, between, task


def _keys(variable: str) -> list[str]:
    path = os.environ.get(variable)
    if not path:
        return []
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


API_KEYS = _keys("QG_API_KEYS")
LIMITED_KEYS = _keys("QG_LIMITED_KEYS") or API_KEYS
UNKNOWN_KEY = "qgk_0000000000000000000000000000"  # fails the checksum: refused before Redis


class ApiCustomer(FastHttpUser):
    wait_time = between(0, 0.01)

    def on_start(self) -> None:
        if not API_KEYS:
            raise RuntimeError("set QG_API_KEYS to a file of API keys")
        self.client.headers["Authorization"] = f"ExisOneApi {os.environ['QG_TOKEN']}"

    def _validate(self, key: str, name: str, **body) -> None:
        with self.client.post("/api/apilicense/validate", json={"apiKey": key, **body}, name=name,
                              catch_response=True) as response:
            if response.status_code in (200, 404, 429):
                response.success()  # denials are correct answers here, not failures

    @task(70)
    def consume(self) -> None:
        self._validate(random.choice(API_KEYS), "consume", units=random.choice((1, 1, 1, 2, 5)))

    @task(15)
    def check_only(self) -> None:
        self._validate(random.choice(API_KEYS), "check-only", consumeUnits=False)

    @task(10)
    def unknown_key(self) -> None:
        self._validate(UNKNOWN_KEY, "unknown key")

    @task(5)
    def at_limit(self) -> None:
        self._validate(random.choice(LIMITED_KEYS), "key at its limit")
