# Sourced by the scripts in this folder: make (or reuse) the project's virtual
# environment and install the project into it with the extras named in $1.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SESSIONSCOPE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
extras="${1:-}"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT${extras:+[$extras]}" ${SESSIONSCOPE_PIP_EXTRA:-}
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
