"""Fake CDF, Clavata and Talonic APIs (and an OAuth identity provider) on loopback, for tests.

    with FakeAPIs() as apis:
        apis.talonic.add_job(status="processing", rows=3)
        config = apis.config()
        ...                                  # run the tap against config
        apis.talonic.finish_all()

Each vendor module follows shared/api-docs/api-notes.md; `base.py` holds the control surface
(request counters, fault injection, latency) that tests use instead of sleeping.
"""

from __future__ import annotations

import typing as t

from tests.fakeapi.clavata import ClavataServer
from tests.fakeapi.cognite import CogniteServer
from tests.fakeapi.idp import IdentityProvider
from tests.fakeapi.talonic import TalonicServer

__all__ = ["FakeAPIs"]


class FakeAPIs:
    """`realistic=True` (or `apis.realistic = True` later) makes every vendor behave like its real
    servers rather than its docs: see `realistic` in each vendor module."""

    def __init__(self, realistic: bool = False) -> None:
        self.idp = IdentityProvider()
        self.cognite = CogniteServer(self.idp)
        self.clavata = ClavataServer()
        self.talonic = TalonicServer()
        self.servers = (self.idp, self.cognite, self.clavata, self.talonic)
        self.realistic = realistic

    @property
    def realistic(self) -> bool:
        return self.cognite.realistic

    @realistic.setter
    def realistic(self, on: bool) -> None:
        for server in self.servers:
            server.realistic = on
            server.invalidate()

    def __enter__(self) -> FakeAPIs:
        return self.start()

    def start(self, port: int = 0) -> FakeAPIs:
        """Start every server: on free ports (`port` 0, the tests), or on `port`, `port`+1, ... (in the
        order identity provider, CDF, Clavata, Talonic), as `python -m tests.fakeapi serve --port` does."""
        for offset, server in enumerate(self.servers):
            server.start(port + offset if port else 0)
        return self

    def __exit__(self, *exc: t.Any) -> None:
        for server in self.servers:
            server.stop()

    def config(self, cognite_auth: str = "oauth", sources: t.Iterable[str] = ("cognite", "clavata", "talonic")) -> dict:
        """A complete tap config pointing at these servers, with every predict job added so far."""
        sources = tuple(sources)
        config: dict = {}
        if "cognite" in sources:
            cdf: dict = {"base_url": self.cognite.base_url, "project": self.cognite.project}
            if cognite_auth == "token":
                cdf["token"] = self.cognite.static_token
            else:
                cdf.update(
                    client_id=self.idp.client_id,
                    client_secret=self.idp.client_secret,
                    token_url=self.idp.token_url,
                    scopes=[f"{self.cognite.base_url}/.default"],
                )
            jobs = []
            for job_id, job in sorted(self.cognite.predict_jobs.items()):
                entry = {"job_id": job_id}
                if job["token"]:
                    entry["job_token"] = job["token"]
                jobs.append(entry)
            cdf["entity_matching_jobs"] = jobs
            config["cognite"] = cdf
        if "clavata" in sources:
            config["clavata"] = {"base_url": self.clavata.base_url, "api_key": self.clavata.api_key}
        if "talonic" in sources:
            config["talonic"] = {"base_url": self.talonic.base_url, "api_key": self.talonic.api_key}
        return config
