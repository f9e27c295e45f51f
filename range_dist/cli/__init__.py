"""The ``range-dist`` command line: one module per command group (see :mod:`range_dist.cli.main`)."""
