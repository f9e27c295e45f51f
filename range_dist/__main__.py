"""``python -m range_dist`` runs the CLI (this is what ``ray job submit`` entrypoints call)."""

import sys

from range_dist.cli.main import main

sys.exit(main())
