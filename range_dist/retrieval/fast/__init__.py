"""The ``fast`` retrieval mode: approximations of the exact retrieval with a measured error.

Modules:

* :mod:`~range_dist.retrieval.fast.approximations`: the approximations themselves (the values'
  PCA basis, the lattice stencils and their interpolation).
* :mod:`~range_dist.retrieval.fast.plan`: :class:`~range_dist.retrieval.fast.plan.FastPlan` (what was
  chosen, its measured error), the rank and spacing ladders, head weights and error measures.
* :mod:`~range_dist.retrieval.fast.planner`: :func:`~range_dist.retrieval.fast.planner.plan_fast`,
  which chooses the approximations for a tolerance and validates them on the run's own points.
* :mod:`~range_dist.retrieval.fast.retriever`: :class:`~range_dist.retrieval.fast.retriever.FastRetriever`,
  which embeds with a plan and checks each interpolated head per call, and
  :class:`~range_dist.retrieval.fast.retriever.RetrievalContext`, what both need of the exact retrieval
  (device rows, query features, variant, settings), so this package never imports the encoder.
"""
