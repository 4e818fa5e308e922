#!/usr/bin/env bash
# Install everything the tests need on a fresh Debian machine, then run the checks and the test suite.
# Used by the README and by CI (.ci/run). Safe to run again: installs are skipped when present.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "missing ${need_apt[*]}: run as root, or: sudo apt-get install -y ${need_apt[*]}" >&2
    exit 1
  fi
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'

# Bytecode is written (some environments turn that off), so the many `python -m autoscaler`
# processes and each worker's collection compile once. On a fresh clone that compiling (the package,
# and pytest's rewritten test modules: about 4 s of CPU for each process that does it first) is done
# once here, on the core the linters leave free, instead of by six workers at once inside the run.
unset PYTHONDONTWRITEBYTECODE
(python3 -m compileall -q autoscaler policies && python3 -m pytest -q --collect-only -p no:xdist) \
  >/dev/null 2>&1 &
compiling=$!

echo "== ruff";          python3 -m ruff check autoscaler policies tests bench
echo "== mypy --strict"; python3 -m mypy  # autoscaler, policies and tests (pyproject.toml)
echo "== import layers"; lint-imports
wait "$compiling" || true  # a module that fails to import fails the run below, with its error
# Six workers on 2 cores: many tests wait on real processes (Prometheus scrapes, replicas starting),
# so six overlap their waits and keep both cores busy (on a quiet 2-core machine: 182 s with 4
# workers, 170 s with 6). A file's tests stay on one worker, so a module-scoped
# Prometheus starts once, and files are handed out longest first (tests/durations.json;
# `--no-loadscope-reorder` keeps that order instead of ordering by the number of tests, which started
# the longest file last).
echo "== pytest";        python3 -m pytest -q -n "${PYTEST_WORKERS:-6}" --dist loadscope --no-loadscope-reorder --durations=15 "$@"
