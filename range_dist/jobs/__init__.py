"""The two jobs: building a retrieval database and embedding a grid (config, plan, steps, run)."""
