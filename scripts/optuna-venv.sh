#!/usr/bin/env bash
# Makes a Python virtual environment with the Optuna that ferrograd's studies interoperate with,
# for the `optuna-interop` tests:
#
#   scripts/optuna-venv.sh /tmp/optuna-venv
#   FERROGRAD_PYTHON=/tmp/optuna-venv/bin/python scripts/with-postgres.sh \
#       cargo test -p ferrograd-tuning --features postgres,optuna-interop --test search_interop
#
# Versions are pinned: the schema ferrograd writes is Optuna 5.1's (alembic revision v3.2.0.a).
# Reuses DIR when it already has them.
set -euo pipefail

dir="${1:-${TMPDIR:-/tmp}/ferrograd-optuna-venv}"
python="${PYTHON:-python3}"
if ! "$dir/bin/python" -c 'import optuna, optuna_dashboard, psycopg2' >/dev/null 2>&1; then
  "$python" -m venv "$dir" || {
    echo "$python -m venv failed (on Debian: apt-get install -y python3-venv)" >&2
    exit 1
  }
  "$dir/bin/python" -m pip install -q --disable-pip-version-check \
    optuna==5.1.0 optuna-dashboard==0.21.0 psycopg2-binary==2.9.13
fi
echo "$dir/bin/python"
