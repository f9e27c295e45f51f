"""Scene records stripped from STAC items, and candidate selection (pure).

Workers receive :class:`SceneRef`, never whole STAC items: the band hrefs, the facts radiometry
needs (processing baseline, whether the provider already applied the BOA offset) and cloud cover.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from range_dist.stac.presets import L2A_BANDS, resolve_asset_keys


@dataclass(frozen=True)
class SceneRef:
    """What a chip reader needs from a STAC item.

    Attributes:
        item_id: STAC item id.
        collection: collection id.
        datetime: acquisition time (ISO 8601 string, as in the item).
        cloud_cover: ``eo:cloud_cover`` in percent (NaN when absent).
        processing_baseline: ``s2:processing_baseline`` (e.g. ``"05.09"``), ``""`` when absent.
        boa_offset_applied: ``earthsearch:boa_offset_applied`` (provider removed the +1000 already).
        hrefs: (band, href) for the 12 L2A bands in :data:`L2A_BANDS` order.
        scl_href: href of the scene classification (SCL) asset.
        sign: whether hrefs must be signed before reading (Planetary Computer).
    """

    item_id: str
    collection: str
    datetime: str
    cloud_cover: float
    processing_baseline: str
    boa_offset_applied: bool
    hrefs: tuple[tuple[str, str], ...]
    scl_href: str
    sign: bool = False

    def band_hrefs(self) -> list[str]:
        return [href for _, href in self.hrefs]


def scene_from_item(item: Mapping[str, Any], sign: bool = False) -> SceneRef:
    """Strip a STAC item (a dict, as pystac's ``to_dict()`` gives) to a :class:`SceneRef`.

    Raises:
        StacError: the item lacks a band asset.
    """
    props = item.get("properties", {})
    assets = item.get("assets", {})
    keys = resolve_asset_keys(assets, str(item.get("id", "")))
    cloud = props.get("eo:cloud_cover")
    return SceneRef(
        item_id=str(item.get("id", "")),
        collection=str(item.get("collection", "")),
        datetime=str(props.get("datetime", "")),
        cloud_cover=float(cloud) if cloud is not None else float("nan"),
        processing_baseline=str(props.get("s2:processing_baseline", "") or ""),
        boa_offset_applied=bool(props.get("earthsearch:boa_offset_applied", False)),
        hrefs=tuple((band, str(assets[keys[band]]["href"])) for band in L2A_BANDS),
        scl_href=str(assets[keys["SCL"]]["href"]),
        sign=sign,
    )


def select_candidates(scenes: Iterable[SceneRef], max_cloud: float, limit: int) -> list[SceneRef]:
    """The best ``limit`` scenes: cloud cover ≤ ``max_cloud`` %, least cloudy first, then newest.

    Scenes without a cloud cover are kept last. Duplicated item ids are dropped. Remaining ties go by
    item id, so the choice does not depend on the order in which an API returned the items.
    """
    seen: set[str] = set()
    kept: list[SceneRef] = []
    for scene in scenes:
        if scene.item_id in seen:
            continue
        seen.add(scene.item_id)
        if scene.cloud_cover == scene.cloud_cover and scene.cloud_cover > max_cloud:
            continue
        kept.append(scene)
    kept.sort(key=lambda s: s.item_id)
    kept.sort(key=lambda s: s.datetime, reverse=True)
    kept.sort(key=lambda s: (s.cloud_cover != s.cloud_cover, s.cloud_cover if s.cloud_cover == s.cloud_cover else 0))
    return kept[:limit]
