"""``range-dist demo``: the whole chain offline on a generated world, with encoders demo-trained on it.

* :mod:`range_dist.testing.world`: the generated world (land-cover regions, Sentinel-2-like L2A scenes as
  COGs and their STAC items).
* :mod:`range_dist.testing.servers`: a Range-capable HTTP file server and a ``rustac serve`` STAC API (127.0.0.1).
* :mod:`range_dist.demo.train`: the demo's encoders fitted contrastively on the world's chips (published formats).
* :mod:`range_dist.demo.figures`: the figures that show retrieval working (key diversity, variation, β, land cover).
* :mod:`range_dist.demo.run`: the orchestration (:func:`~range_dist.demo.run.run_demo`).
"""

from __future__ import annotations
