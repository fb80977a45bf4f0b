# Sourced by scripts/demo and scripts/test: make .venv if missing and install matcher into it.
# Usage: extras=test . scripts/_venv.sh   (extras optional)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || { echo "matcher needs Python >= 3.10" >&2; exit 2; }
  "$py" -m venv "$root/.venv"
fi
venv_py="$root/.venv/bin/python"
extras="${extras:-}"
spec="$root"
[ -n "$extras" ] && spec="$root[$extras]"
# Reinstall only when pyproject.toml changed since the last install.
stamp="$root/.venv/.matcher-installed${extras:+-$extras}"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  # the distribution was called "matcher" before it became photo-dataset-check: drop the old install
  "$venv_py" -m pip uninstall -q -y --disable-pip-version-check matcher >/dev/null 2>&1 || true
  "$venv_py" -m pip install -q --disable-pip-version-check -e "$spec"
  touch "$stamp"
fi
