#!/usr/bin/env bash
# The whole product on the bundled wine example, with the embedded defaults (SQLite, local
# files). Run through `make demo`, which sets up .venv first.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DEMO=build/demo
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "cellpipe check: steps, data edges, parameters, metrics, packages"
$BIN/cellpipe check examples/wine/wine.ipynb

say "cellpipe graph: the pipeline as a Mermaid diagram"
$BIN/cellpipe graph examples/wine/wine.ipynb --format mermaid

say "cellpipe check on a notebook with mistakes: every error, with cell and line (exit 2)"
if $BIN/cellpipe check examples/mistakes/mistakes.ipynb; then
  echo "expected the mistakes notebook to fail the check" >&2; exit 1
fi

# A fresh copy, so the first run is cold every time the demo runs.
rm -rf "$DEMO" && mkdir -p "$DEMO" && cp -r examples/wine "$DEMO/wine"
NB="$DEMO/wine/wine.ipynb"

say "cellpipe run: parallel steps in isolated processes, values in the artifact store"
$BIN/cellpipe run "$NB"

say "cellpipe run again: every step comes from the cache"
time $BIN/cellpipe run "$NB"

say "cellpipe run -p MAX_DEPTH=2: only the steps that read MAX_DEPTH, and their descendants, re-run"
$BIN/cellpipe run "$NB" -p MAX_DEPTH=2

cd "$DEMO/wine"
CP=../../../$BIN/cellpipe
run_ids() { $CP runs --json --limit "$1" | ../../../$BIN/python -c 'import json,sys; print(" ".join(r["run_id"] for r in json.load(sys.stdin)["runs"]))'; }
LAST=$(run_ids 1)
FIRST=$(run_ids 3 | awk '{print $3}')

say "cellpipe why: why train_forest re-ran and split did not"
$CP why "$LAST" train_forest
$CP why "$LAST" split

say "cellpipe runs: the run history"
$CP runs

say "cellpipe show: one run's parameters, metrics, steps and outputs"
$CP show "$LAST"

say "cellpipe compare: the first run and the MAX_DEPTH=2 run side by side"
$CP compare "$FIRST" "$LAST"

say "cellpipe lineage: where every value of the last run came from"
$CP lineage "$LAST" --format mermaid

say "cellpipe logs: what train_forest printed"
$CP logs "$LAST" train_forest

say "cellpipe snapshot list: the workspace at the start and before/after each step"
$CP snapshot list "$LAST"

say "cellpipe reproduce: restore the first run's start snapshot, run it again, compare every output"
$CP reproduce "$FIRST"

say "cellpipe compile: the same notebook as Kubeflow Pipelines v2 YAML, validated"
$CP compile wine.ipynb -o wine.yaml
echo "components: $(grep -c "^  comp-" wine.yaml) (one lightweight Python component per step)"
$CP image wine.ipynb -o build-context
ls build-context
