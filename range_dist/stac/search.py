"""Search a STAC API for the Sentinel-2 scenes covering a point (I/O edge: pystac-client).

Cloud cover is filtered on the server when the API declares the ``query`` or ``filter`` (CQL2)
conformance class, and always again on the client, so an API without them (e.g. ``rustac serve``,
which silently returns nothing for ``query``) gives the same candidates.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from range_dist.errors import StacError
from range_dist.stac.scenes import SceneRef, scene_from_item, select_candidates

FilterMode = Literal["query", "filter", "client"]


@dataclass(frozen=True)
class SearchConfig:
    """How to search.

    Attributes:
        url: STAC API root.
        collection: collection id (``sentinel-2-l2a``).
        datetime: ``start/end`` interval (RFC 3339 dates), or ``None`` for any time.
        max_cloud: maximum ``eo:cloud_cover`` in percent (default 20, as S2-100K).
        max_items: at most this many items fetched per point before client-side filtering.
        candidates: at most this many scenes tried per point (best first).
        sign: sign asset hrefs before reading (Planetary Computer).
        server_filter: ``auto`` (use the API's query/filter when declared), or ``client`` (never).
        retries: attempts per search on API errors (HTTP 429/5xx), with exponential backoff.
    """

    url: str
    collection: str = "sentinel-2-l2a"
    datetime: str | None = "2021-01-01/2023-05-17"
    max_cloud: float = 20.0
    max_items: int = 50
    candidates: int = 3
    sign: bool = False
    server_filter: Literal["auto", "client"] = "auto"
    retries: int = 3


def choose_filter_mode(conforms_query: bool, conforms_filter: bool, setting: str = "auto") -> FilterMode:
    """Which cloud filter to use given the API's conformance classes (pure)."""
    if setting == "client":
        return "client"
    if conforms_filter:
        return "filter"
    if conforms_query:
        return "query"
    return "client"


def search_parameters(config: SearchConfig, lon: float, lat: float, mode: FilterMode) -> dict[str, Any]:
    """Keyword arguments of ``Client.search`` for one point (pure)."""
    params: dict[str, Any] = {
        "collections": [config.collection],
        "intersects": {"type": "Point", "coordinates": [lon, lat]},
        "max_items": config.max_items,
        "limit": min(config.max_items, 100),
    }
    if config.datetime:
        params["datetime"] = config.datetime
    if mode == "query":
        params["query"] = {"eo:cloud_cover": {"lte": config.max_cloud}}
    elif mode == "filter":
        params["filter"] = {"op": "<=", "args": [{"property": "eo:cloud_cover"}, config.max_cloud]}
        params["filter_lang"] = "cql2-json"
    return params


class StacSearcher:
    """A pystac-client Client with the filter mode decided once from the API's conformance."""

    def __init__(self, config: SearchConfig) -> None:
        from pystac_client import Client
        from pystac_client.conformance import ConformanceClasses

        self.config = config
        try:
            self.client = Client.open(config.url)
        except Exception as exc:
            raise StacError(f"STAC API {config.url} could not be opened ({exc}); check --stac-url") from exc
        self.mode = choose_filter_mode(self.client.conforms_to(ConformanceClasses.QUERY),
                                       self.client.conforms_to(ConformanceClasses.FILTER), config.server_filter)

    def search(self, lon: float, lat: float) -> list[SceneRef]:
        """Candidate scenes covering (lon, lat), best first (see :func:`select_candidates`).

        Raises:
            StacError: the API still fails after ``retries`` attempts.
        """
        params = search_parameters(self.config, lon, lat, self.mode)
        last: Exception | None = None
        for attempt in range(max(1, self.config.retries)):
            try:
                items = list(self.client.search(**params).items_as_dicts())
                break
            except Exception as exc:  # pystac_client.APIError, requests errors
                last = exc
                time.sleep(min(4.0, 0.25 * 2**attempt))
        else:
            raise StacError(f"STAC search at ({lon:.5f}, {lat:.5f}) on {self.config.url} failed after "
                            f"{self.config.retries} attempts: {last}")
        scenes = [scene_from_item(item, sign=self.config.sign) for item in items]
        return select_candidates(scenes, self.config.max_cloud, self.config.candidates)


@lru_cache(maxsize=4)
def searcher_for(config: SearchConfig) -> StacSearcher:
    """One searcher per process and config (workers reuse the HTTP session)."""
    return StacSearcher(config)
