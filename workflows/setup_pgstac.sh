#!/usr/bin/env bash
# Install what tests/test_stac_pgstac.py needs (idempotent): PostgreSQL + PostGIS from Debian's packages
# when the PostGIS extension is missing, and the `pgstac` extra of pyproject.toml (pypgstac,
# stac-fastapi-pgstac, uvicorn) into the active virtual environment.
# Usage: . .venv/bin/activate && bash workflows/setup_pgstac.sh   (PG_MAJOR=15 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
PG_MAJOR=${PG_MAJOR:-15}

if [ ! -f "/usr/share/postgresql/${PG_MAJOR}/extension/postgis.control" ] \
    || [ ! -x "/usr/lib/postgresql/${PG_MAJOR}/bin/initdb" ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup_pgstac: need root (or sudo) to apt-get install PostGIS" >&2; exit 1; }
    SUDO="sudo"
  fi
  # postgresql-N-postgis-3 pulls in the postgresql-N server it extends
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    "postgresql-${PG_MAJOR}" "postgresql-${PG_MAJOR}-postgis-3" >/dev/null
fi

if [ -z "${VIRTUAL_ENV:-}" ]; then
  echo "setup_pgstac: activate the project's virtual environment first (. .venv/bin/activate)" >&2
  exit 1
fi
# The pins live in pyproject.toml's `pgstac` extra (the project itself is already installed: quick no-op).
python -m pip install -q -e ".[pgstac]"
python -c "import pypgstac, psycopg, stac_fastapi.pgstac, uvicorn" \
  && echo "setup_pgstac: PostgreSQL ${PG_MAJOR} + PostGIS and pypgstac / stac-fastapi-pgstac / uvicorn are installed"
