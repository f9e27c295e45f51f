"""A STAC description of a cube: one Collection and one Item whose ``zarr`` asset is the cube (pystac).

What the Item says (all read from the cube's attributes and coordinates, nothing recomputed):

* geometry / bbox: the cube's cell-edge extent; ``datetime``: when the cube was made
  (``range_dist:created``; an embedding of a database has no acquisition time of its own).
* the ``zarr`` asset: roles ``data``, media type ``application/vnd+zarr``, ``xarray:open_kwargs``
  (xarray-assets extension: ``engine="zarr"``, ``decode_coords="all"``, ``chunks={}``), and the
  datacube extension's ``cube:dimensions`` / ``cube:variables`` (lat, lon, beta or the heads
  layout's dimensions, feature); the projection extension's ``proj:code`` / ``proj:shape`` /
  ``proj:transform`` (``[res, 0, west, 0, -res, north]``).
* the embedding fields ``emb:type``, ``emb:dimensions``, ``emb:data_type``, ``emb:quantization``,
  ``emb:model``, ``emb:source_data``: the STAC embedding extension is a draft with no schema that
  can be resolved offline, so these are written as plain properties and the extension is *not*
  listed in ``stac_extensions``.
* ``range_dist:layout``: the stored β levels, or the heads layout (any β in [0, 1] on read);
  ``range_dist:`` provenance: the β levels asked for, the encoding record, variant, τ, the SatCLIP checkpoint and
  database with their SHA-256s, the grid, sample-asset flag; links (``derived_from``) to the
  checkpoint and the database files, each with its ``file:checksum``-style SHA-256 as a property.
* the overview levels (``multiscales``), when the cube has them.

Files written under ``OUT/``: ``collection.json``, ``<item>/<item>.json`` (a self-contained catalog,
relative links), and ``api/collection.json`` (no item links) + ``api/items.ndjson`` (one Item per line)
for ``rustac serve OUT/api/collection.json OUT/api/items.ndjson`` or a pgstac load. The asset's href
is the cube's absolute path, or its URL for a cube on object storage (``s3://bucket/cube.zarr``, read
in place; the catalog itself is written to a local folder), unless ``href`` is given (e.g. the URL
where the cube is published).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from range_dist.cube.store import CRS_CODE
from range_dist.errors import ConfigError
from range_dist.util.jsonable import to_jsonable
from range_dist.util.stores import StoreLocation

ZARR_MEDIA_TYPE = "application/vnd+zarr"
DEFAULT_COLLECTION = "range-dist-embeddings"
_EMB_FIELDS = ("type", "dimensions", "data_type", "quantization", "model", "source_data")


def _read_cube(path: StoreLocation) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """(group attributes, {array: (dims, shape, dtype)}, lat/lon-bearing coordinates) of a cube."""
    import zarr

    path.check_bucket()  # a missing bucket or a refused key is named as such, not as a missing cube
    if not path.exists():
        raise ConfigError(f"cube {path} does not exist; pass the .zarr store written by `range-dist embed-grid`")
    try:
        with path.errors("reading"):
            group: Any = zarr.open_group(path.zarr_store(read_only=True), mode="r", use_consolidated=False)
            arrays = {name: (tuple(arr.metadata.dimension_names or ()), tuple(arr.shape), str(arr.dtype))
                      for name, arr in group.arrays()}
            coords = {name: np.asarray(group[name][...]) for name in ("lat", "lon", "beta") if name in group}
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(f"cube {path} could not be read as a Zarr store ({type(exc).__name__}: {exc}); pass the "
                          ".zarr store written by `range-dist embed-grid`") from exc
    if "lat" not in coords or "lon" not in coords:
        raise ConfigError(f"cube {path} has no lat/lon coordinates; pass a cube written by `range-dist embed-grid`")
    return dict(group.attrs), arrays, coords


def _geometry(lat: np.ndarray, lon: np.ndarray, attrs: dict[str, Any]) -> tuple[list[float], float]:
    grid = attrs.get("range_dist:grid") or {}
    res = float(grid.get("resolution") or (abs(lat[0] - lat[1]) if len(lat) > 1 else abs(lon[1] - lon[0])))
    west, east = float(lon[0] - res / 2), float(lon[-1] + res / 2)
    south, north = float(lat[-1] - res / 2), float(lat[0] + res / 2)
    return [west, south, east, north], res


def _dimensions(arrays: dict[str, Any], coords: dict[str, Any], bbox: list[float], res: float) -> dict[str, Any]:
    dims: dict[str, Any] = {
        "lon": {"type": "spatial", "axis": "x", "extent": [bbox[0], bbox[2]], "step": res, "reference_system": 4326,
                "description": "longitude of cell centre (ascending)"},
        "lat": {"type": "spatial", "axis": "y", "extent": [bbox[1], bbox[3]], "step": -res, "reference_system": 4326,
                "description": "latitude of cell centre (descending, north-up)"},
    }
    if "beta" in coords:
        dims["beta"] = {"type": "beta", "values": [float(b) for b in coords["beta"]],
                        "description": "RANGE+ beta: weight of the semantic head (0 = spatial, 1 = semantic)"}
    for names, shape, _ in arrays.values():
        for dim, size in zip(names, shape):
            if dim not in dims and dim not in ("tile_row", "tile_col"):
                dims[dim] = {"type": "feature", "extent": [0, int(size) - 1],
                             "description": f"index along {dim} (embedding features)"}
    return dims


def _variables(arrays: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, (names, _shape, dtype) in sorted(arrays.items()):
        if {"lat", "lon"} <= set(names) and name not in ("lat", "lon"):
            out[name] = {"dimensions": list(names), "type": "data", "data_type": dtype,
                         "description": f"{name} ({dtype}); NaN (or a NaN scale) = cell not embedded"}
    return out


def _created(attrs: dict[str, Any]) -> datetime:
    text = attrs.get("range_dist:created")
    try:
        return datetime.fromisoformat(str(text)) if text else datetime.now(timezone.utc)
    except ValueError:
        return datetime.now(timezone.utc)


def build_item(path: str | Path | StoreLocation, *, href: str | None = None, item_id: str | None = None,
               collection_id: str = DEFAULT_COLLECTION) -> Any:
    """The STAC Item (pystac) of a cube.

    Args:
        path: the cube: a local path, or an object-store URL (``s3://bucket/cube.zarr``), read in place.
        href: the asset href (default: the cube's absolute path, or its URL on object storage).
        item_id: Item id (default: the store's name without ``.zarr``).
        collection_id: the Collection it belongs to.

    Raises:
        ConfigError: not a readable cube.
        ObjectStoreError: the object store refused or could not serve the reads.
    """
    import pystac
    from pystac.extensions.datacube import DatacubeExtension, Dimension, Variable
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.xarray_assets import XarrayAssetsExtension

    path = StoreLocation.parse(path, "cube")
    attrs, arrays, coords = _read_cube(path)
    bbox, res = _geometry(coords["lat"], coords["lon"], attrs)
    west, south, east, north = bbox
    geometry = {"type": "Polygon", "coordinates": [[[west, south], [east, south], [east, north], [west, north],
                                                    [west, south]]]}
    properties: dict[str, Any] = {"title": attrs.get("title", f"RANGE geo-embedding cube {path.name}"),
                                  "created": _created(attrs).isoformat()}
    for field in _EMB_FIELDS:  # the cube writes them as geoemb:* (or emb:* in newer cubes)
        for prefix in ("emb:", "geoemb:"):
            if f"{prefix}{field}" in attrs:
                properties[f"emb:{field}"] = attrs[f"{prefix}{field}"]
                break
    provenance = {k: v for k, v in attrs.items() if k.startswith("range_dist:")
                  and k not in ("range_dist:run_report", "range_dist:signature")}
    properties.update(to_jsonable(provenance))
    encoding = attrs.get("range_dist:cube_encoding") or {}
    if encoding.get("layout") == "heads":  # the heads once per cell: any β in [0, 1] is an exact blend on read
        properties["range_dist:layout"] = {"layout": "heads", "beta_range": [0.0, 1.0],
                                           "variables": encoding.get("variables"), "blend": encoding.get("blend")}
    else:
        properties["range_dist:layout"] = {"layout": "beta", "betas": [float(b) for b in coords.get("beta", [])]}
    if "multiscales" in attrs:
        properties["range_dist:overviews"] = [
            {"asset": entry.get("asset"), "spatial:shape": entry.get("spatial:shape"),
             "spatial:transform": entry.get("spatial:transform")} for entry in attrs["multiscales"].get("layout", [])]
    item = pystac.Item(id=item_id or path.name.removesuffix(".zarr"), geometry=geometry, bbox=bbox,
                       datetime=_created(attrs), properties=properties, collection=collection_id)
    # the URL is what a reader opens (xr.open_zarr(url, storage_options=...)); it never holds a secret
    default_href = str(path.local.resolve()) if path.is_local else path.describe()
    asset = pystac.Asset(href=href or default_href, media_type=ZARR_MEDIA_TYPE, roles=["data"],
                         title="embedding cube (Zarr v3)")
    item.add_asset("zarr", asset)
    XarrayAssetsExtension.add_to(item)
    xr_ext = XarrayAssetsExtension.ext(asset)
    xr_ext.open_kwargs = {"engine": "zarr", "decode_coords": "all", "chunks": {}}  # type: ignore[attr-defined]
    cube_ext = DatacubeExtension.ext(item, add_if_missing=True)
    cube_ext.apply(dimensions={k: Dimension.from_dict(v) for k, v in _dimensions(arrays, coords, bbox, res).items()},
                   variables={k: Variable.from_dict(v) for k, v in _variables(arrays).items()})
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.apply(code=str(attrs.get("proj:code", CRS_CODE)), shape=[len(coords["lat"]), len(coords["lon"])],
               transform=[res, 0.0, west, 0.0, -res, north], bbox=bbox)
    for key, rel_title in (("range_dist:satclip", "SatCLIP location encoder checkpoint"),
                           ("range_dist:database", "retrieval database")):
        if attrs.get(key):
            link = pystac.Link(rel="derived_from", target=str(attrs[key]), title=rel_title,
                               extra_fields={"range_dist:sha256": attrs.get(f"{key}_sha256")})
            item.add_link(link)
    return item


def build_collection(item: Any, collection_id: str = DEFAULT_COLLECTION) -> Any:
    """A Collection with the Item's extent (spatial bbox, temporal instant) and embedding summaries."""
    import pystac

    props = item.properties
    summaries = pystac.Summaries({k: [props[k]] for k in ("emb:dimensions", "emb:data_type", "emb:quantization",
                                                         "emb:type") if k in props})
    extent = pystac.Extent(pystac.SpatialExtent([item.bbox]), pystac.TemporalExtent([[item.datetime, item.datetime]]))
    description = ("RANGE / RANGE+ geo-embeddings on a regular lat/lon grid, written by range-dist. The emb:* "
                   "properties follow the STAC embedding extension draft (no resolvable schema: not listed in "
                   "stac_extensions).")
    return pystac.Collection(id=collection_id, description=description, extent=extent, license="other",
                             title="range-dist embedding cubes", summaries=summaries)


@dataclass(frozen=True)
class CatalogFiles:
    """What :func:`write_catalog` wrote.

    Attributes:
        collection, item: the static catalog (relative links; browsable, relocatable).
        api_collection, api_items: the Collection without item links and the Items as ndjson, the
            input of ``rustac serve API_COLLECTION API_ITEMS`` (or a pgstac load).
    """

    collection: Path
    item: Path
    api_collection: Path
    api_items: Path


def write_catalog(path: str | Path | StoreLocation, out: str | Path, *, href: str | None = None,
                  item_id: str | None = None, collection_id: str = DEFAULT_COLLECTION) -> CatalogFiles:
    """Write the static catalog ``OUT/collection.json`` + ``OUT/<item>/<item>.json`` and ``OUT/api/`` for a cube.

    Args:
        path: the cube: a local path, or an object-store URL, read in place.
        out: the catalog folder (local).
        href: the Zarr asset's href (default: the cube's absolute path, or its URL on object storage).
        item_id: the Item id (default: the store's name without ``.zarr``).
        collection_id: the Collection id.

    Raises:
        ConfigError: not a readable cube.
        ObjectStoreError: the object store refused or could not serve the reads.
    """
    import pystac

    item = build_item(path, href=href, item_id=item_id, collection_id=collection_id)
    collection = build_collection(item, collection_id)
    api_collection = collection.to_dict(include_self_link=False, transform_hrefs=False)
    api_collection["links"] = []
    collection.add_item(item)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    collection.normalize_hrefs(str(out.resolve()))
    collection.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
    # an API serves the Items from the ndjson; item links in its collection would be loaded a second time
    # (rustac resolves them against its working folder, not the collection file's)
    api = out / "api"
    api.mkdir(exist_ok=True)
    record = item.to_dict(include_self_link=False, transform_hrefs=False)
    record["links"] = [link for link in record["links"] if link.get("rel") not in ("root", "parent", "collection")]
    (api / "collection.json").write_text(json.dumps(api_collection, indent=1))
    (api / "items.ndjson").write_text(json.dumps(record) + "\n")
    return CatalogFiles(out / "collection.json", Path(item.get_self_href()), api / "collection.json",
                        api / "items.ndjson")
