"""Search a STAC API for the Sentinel-2 scenes covering a point (I/O edge: pystac-client).

Cloud cover is filtered on the server when the API declares the ``query`` or ``filter`` (CQL2)
conformance class, and always again on the client, so an API without them (e.g. ``rustac serve``,
which silently returns nothing for ``query``) gives the same candidates.

Nearby locations can share one search (:meth:`StacSearcher.search_many`): one query over their
bounding box, then each location keeps the items whose footprint contains it.

Planetary Computer hrefs are signed here (:func:`sign_scene`), after candidate selection, so a
missing ``planetary-computer`` package or a failing token service is a :class:`StacError` of the
search (recorded per location as ``stac_error``) rather than unreadable blobs later.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from itertools import pairwise
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
        sign: sign the candidates' asset hrefs (Planetary Computer; see :func:`sign_scene`).
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


def search_parameters(config: SearchConfig, lon: float, lat: float, mode: FilterMode,
                      bbox: tuple[float, float, float, float] | None = None,
                      max_items: int | None = None) -> dict[str, Any]:
    """Keyword arguments of ``Client.search`` for one point, or for an area when ``bbox`` is given (pure).

    Args:
        config: the search settings.
        lon, lat: the point (ignored when ``bbox`` is given).
        mode: the cloud filter (:func:`choose_filter_mode`).
        bbox: (west, south, east, north) of an area search instead of the point.
        max_items: items fetched in all (default ``config.max_items``).
    """
    geometry = {"type": "Point", "coordinates": [lon, lat]} if bbox is None else bbox_polygon(bbox)
    wanted = config.max_items if max_items is None else max_items
    params: dict[str, Any] = {
        "collections": [config.collection],
        "intersects": geometry,
        "max_items": wanted,
        "limit": min(wanted, 100),
    }
    if config.datetime:
        params["datetime"] = config.datetime
    if mode == "query":
        params["query"] = {"eo:cloud_cover": {"lte": config.max_cloud}}
    elif mode == "filter":
        params["filter"] = {"op": "<=", "args": [{"property": "eo:cloud_cover"}, config.max_cloud]}
        params["filter_lang"] = "cql2-json"
    return params


def _api_errors(*extra: type[Exception]) -> tuple[type[Exception], ...]:
    """What pystac-client raises when a STAC API fails or answers something that is not STAC.

    ``APIError`` wraps every ``requests`` error and HTTP status outside 2xx; ``ValueError`` is a body
    that is not JSON (or a malformed URL); ``KeyError`` / ``AttributeError`` are JSON that is not a
    STAC object or page (a missing ``id``, a link without ``rel``, a list instead of an object).
    """
    from pystac_client.exceptions import APIError

    return (APIError, ValueError, KeyError, AttributeError, *extra)


class StacSearcher:
    """A pystac-client Client with the filter mode decided once from the API's conformance."""

    def __init__(self, config: SearchConfig) -> None:
        from pystac_client import Client
        from pystac_client.conformance import ConformanceClasses
        from pystac_client.errors import ClientTypeError

        self.config = config
        try:
            self.client = Client.open(config.url)
        except _api_errors(ClientTypeError, OSError) as exc:  # OSError: a URL without scheme is read as a file
            raise StacError(f"STAC API {config.url} could not be opened ({type(exc).__name__}: {exc}); "
                            "check --stac-url") from exc
        self.mode = choose_filter_mode(self.client.conforms_to(ConformanceClasses.QUERY),
                                       self.client.conforms_to(ConformanceClasses.FILTER), config.server_filter)

    def _items(self, params: dict[str, Any], where: str) -> list[dict[str, Any]]:
        try:
            search = self.client.search(**params)  # builds the request only, no I/O
        except Exception as exc:  # catch-all: pystac_client raises bare Exception for rejected parameters
            raise StacError(f"STAC search {where} on {self.config.url}: parameters {params} rejected "
                            f"({type(exc).__name__}: {exc}); check --datetime") from exc
        last: Exception | None = None
        for attempt in range(max(1, self.config.retries)):
            try:
                return list(search.items_as_dicts())
            except _api_errors() as exc:
                last = exc
                time.sleep(min(4.0, 0.25 * 2**attempt))
        raise StacError(f"STAC search {where} on {self.config.url} failed after {self.config.retries} attempts: "
                        f"{type(last).__name__}: {last}")

    def _candidates(self, items: Sequence[Mapping[str, Any]]) -> list[SceneRef]:
        scenes = [scene_from_item(item, sign=self.config.sign) for item in items]
        picked = select_candidates(scenes, self.config.max_cloud, self.config.candidates)
        return [sign_scene(s) for s in picked] if self.config.sign else picked

    def search(self, lon: float, lat: float) -> list[SceneRef]:
        """Candidate scenes covering (lon, lat), best first (see :func:`select_candidates`).

        Raises:
            StacError: the API still fails after ``retries`` attempts, or signing failed.
        """
        items = self._items(search_parameters(self.config, lon, lat, self.mode), f"at ({lon:.5f}, {lat:.5f})")
        return self._candidates(items)

    def search_many(self, points: Sequence[tuple[float, float]], area_max_items: int = 2000) -> list[list[SceneRef]]:
        """Candidates of each of several nearby points from one search over their bounding box.

        Each point keeps the first ``max_items`` of the items whose footprint contains it, so the
        result equals :meth:`search` per point (up to points exactly on a footprint's edge, and given
        an API that orders items the same way whatever the geometry, as by datetime). When the area
        holds ``area_max_items`` items or more, the list may be truncated, so each point is searched
        on its own instead.

        Args:
            points: (lon, lat) pairs, close together (one grid cell of :func:`group_by_cell`); not
                across the antimeridian.
            area_max_items: the most items fetched for the area.

        Raises:
            StacError: the API still fails after ``retries`` attempts, or signing failed.
        """
        if len(points) <= 1:
            return [self.search(lon, lat) for lon, lat in points]
        lons, lats = [p[0] for p in points], [p[1] for p in points]
        pad = 1e-6  # a box of one repeated point would be degenerate; extra items are dropped per point anyway
        bbox = (min(lons) - pad, min(lats) - pad, max(lons) + pad, max(lats) + pad)
        params = search_parameters(self.config, 0.0, 0.0, self.mode, bbox=bbox, max_items=area_max_items)
        items = self._items(params, f"in {tuple(round(v, 5) for v in bbox)}")
        if len(items) >= area_max_items:
            return [self.search(lon, lat) for lon, lat in points]
        return [self._candidates([it for it in items if item_contains(it, lon, lat)][: self.config.max_items])
                for lon, lat in points]


def sign_scene(scene: SceneRef) -> SceneRef:
    """``scene`` with its hrefs signed for Planetary Computer (a SAS token appended), marked as signed.

    ``planetary_computer`` fetches one token per storage container from its token service
    (``PC_SDK_SAS_URL``, default the public one) and caches it in the process until shortly
    before it expires; hrefs outside Azure blob storage are left as they are.

    Raises:
        StacError: ``planetary-computer`` is not installed, or the token service failed.
    """
    try:
        import planetary_computer  # type: ignore[import-not-found]
    except ImportError as exc:
        raise StacError("this STAC API's assets must be signed (Planetary Computer): pip install planetary-computer"
                        ) from exc
    import requests
    try:
        hrefs = tuple((band, str(planetary_computer.sign(href))) for band, href in scene.hrefs)
        scl_href = str(planetary_computer.sign(scene.scl_href))
    except (requests.RequestException, ValueError, TypeError) as exc:  # HTTP error after retries, bad token JSON
        raise StacError(f"signing the assets of {scene.item_id} failed: {exc} (token service "
                        f"{planetary_computer.settings.Settings.get().sas_url})") from exc
    return replace(scene, hrefs=hrefs, scl_href=scl_href, sign=False)


# ---------------------------------------------------------------------------- grouping by area (pure)
def bbox_polygon(bbox: tuple[float, float, float, float]) -> dict[str, Any]:
    """GeoJSON Polygon of a (west, south, east, north) box."""
    w, s, e, n = bbox
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def group_by_cell(points: Sequence[tuple[float, float]], cell_deg: float) -> list[list[int]]:
    """Indices of ``points`` grouped by the ``cell_deg`` × ``cell_deg`` lon/lat cell they fall in.

    Groups come in order of their first point, indices ascending inside a group.
    """
    if cell_deg <= 0:
        raise ValueError(f"cell_deg {cell_deg}: must be > 0")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (lon, lat) in enumerate(points):
        groups.setdefault((math.floor(lon / cell_deg), math.floor(lat / cell_deg)), []).append(i)
    return list(groups.values())


def _in_ring(lon: float, lat: float, ring: Sequence[Sequence[float]]) -> bool:
    inside = False
    for a, b in pairwise(ring):
        (x0, y0), (x1, y1) = a[:2], b[:2]  # positions may carry a height
        if (y0 > lat) != (y1 > lat) and lon < x0 + (lat - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside  # even-odd rule: a ray to the east crosses this edge
    return inside


def geometry_contains(geometry: Mapping[str, Any], lon: float, lat: float) -> bool:
    """Whether a GeoJSON Polygon or MultiPolygon contains (lon, lat) (planar, holes honoured).

    Points exactly on an edge may go either way.
    """
    kind = geometry.get("type")
    if kind == "Polygon":
        polygons = [geometry["coordinates"]]
    elif kind == "MultiPolygon":
        polygons = geometry["coordinates"]
    else:
        raise ValueError(f"geometry type {kind!r}: expected Polygon or MultiPolygon")
    return any(_in_ring(lon, lat, rings[0]) and not any(_in_ring(lon, lat, hole) for hole in rings[1:])
               for rings in polygons if rings)


def item_contains(item: Mapping[str, Any], lon: float, lat: float) -> bool:
    """Whether a STAC item's footprint (its geometry, else its bbox) contains (lon, lat)."""
    geometry = item.get("geometry")
    if geometry and geometry.get("type") in ("Polygon", "MultiPolygon"):
        return geometry_contains(geometry, lon, lat)
    bbox = item.get("bbox")
    if bbox and len(bbox) >= 4:
        w, s, e, n = bbox[0], bbox[1], bbox[-2], bbox[-1]  # 2D or 3D bbox
        return w <= lon <= e and s <= lat <= n
    return False


@lru_cache(maxsize=4)
def searcher_for(config: SearchConfig) -> StacSearcher:
    """One searcher per process and config (workers reuse the HTTP session)."""
    return StacSearcher(config)
