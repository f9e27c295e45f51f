"""Real local servers and a generated Sentinel-2-like world: for the tests, the benchmarks and
``range-dist demo`` (needs the ``demo`` extra: aiohttp and rustac)."""
