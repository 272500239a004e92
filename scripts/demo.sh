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

say "cellpipe models register: the first run's forest as model wine:1, alias production"
$CP models register wine --run "$FIRST" --step train_forest --var forest --alias production
$CP models register wine --run "$LAST" --step train_forest --var forest --description "MAX_DEPTH=2"
$CP models list
$CP models show wine@production

say "cellpipe serve: wine@production over the Open Inference Protocol v2 (REST and gRPC), an alias move followed live"
# Two worker processes share the REST port; the gRPC API answers on a second port. While it
# serves, `cellpipe models alias` moves production from version 1 to 2: the running server
# follows it without a restart, and each answer's model_version says which version answered.
$CP serve wine@production --port 0 --grpc-port 0 --workers 2 --log-level warning --json > serve.json &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
../../../$BIN/python - <<'PY'
import json, pathlib, time
for _ in range(600):  # the server writes one JSON line once it listens (the real ports)
    text = pathlib.Path("serve.json").read_text()
    if text.strip():
        break
    time.sleep(0.1)
served = json.loads(text)
print("serving", [m["ref"] for m in served["models"]], "REST", served["url"], "gRPC", served["grpc"])
PY
../../../$BIN/python - <<'PY'
import json, pathlib, urllib.request
import numpy as np
import tritonclient.grpc as grpcclient

served = json.loads(pathlib.Path("serve.json").read_text())
base = served["url"]
meta = json.load(urllib.request.urlopen(f"{base}/v2/models/wine"))
print("REST GET /v2/models/wine ->", meta["name"], "versions", meta["versions"], meta["platform"])
row = [13.2, 1.78, 2.14, 11.2, 100, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050]
body = {"id": "demo", "inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": row}]}
request = urllib.request.Request(f"{base}/v2/models/wine/infer", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
print("REST POST /v2/models/wine/infer ->", json.load(urllib.request.urlopen(request)))
client = grpcclient.InferenceServerClient(served["grpc"].removeprefix("grpc://"))
x = grpcclient.InferInput("input-0", [1, 13], "FP32")  # FP32, a common client default: cast to FP64
x.set_data_from_numpy(np.array([row], dtype=np.float32))
answer = client.infer("wine", [x])
print("gRPC ModelInfer (tritonclient, FP32) ->", answer.get_response().model_version,
      answer.as_numpy(answer.get_response().outputs[0].name))
client.close()
PY
$CP models alias wine production 2
../../../$BIN/python - <<'PY'
import json, pathlib, time, urllib.request
served = json.loads(pathlib.Path("serve.json").read_text())
base = served["url"]
row = [13.2, 1.78, 2.14, 11.2, 100, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050]
body = json.dumps({"inputs": [{"name": "input-0", "shape": [1, 13], "datatype": "FP64", "data": row}]}).encode()
for _ in range(600):  # every worker polls the registry (every second by default)
    versions = set()
    for _ in range(8):  # several requests, so both workers answer
        request = urllib.request.Request(f"{base}/v2/models/wine/infer", body, {"Content-Type": "application/json"})
        versions.add(json.load(urllib.request.urlopen(request))["model_version"])
    if versions == {"2"}:
        break
    time.sleep(0.2)
print("after the move, every answer comes from model_version", versions)
metrics = urllib.request.urlopen(f"{base}/metrics").read().decode()
print("\n".join(line for line in metrics.splitlines()
                if line.startswith(("cellpipe_model_switches_total{", "cellpipe_model_version{"))))
PY
kill -INT $SERVER && wait $SERVER || true
trap - EXIT

say "cellpipe serve --manifest: the same version as a KServe InferenceService for a cluster"
$CP serve wine@production --manifest wine-isvc.yaml --storage-uri s3://models/wine/1
grep -A6 "predictor:" wine-isvc.yaml

say "cellpipe report: the last run as one self-contained HTML page (graph, parameters, metrics, outputs)"
$CP report "$LAST" -o ../wine-report.html

say "From inside a notebook: examples/explore/explore.ipynb driven in a real Jupyter kernel"
# check, run (live view), why, runs, compare, load, lineage, %cellpipe, register, serve: the
# executed notebook is written as HTML; any error in a cell fails the demo. The kernel talks
# over local sockets (ipc), not TCP.
cp -r ../../../examples/explore ../explore
# From the notebook's folder: the ipc socket files are named relative to the working directory,
# which the kernel (started in the notebook's folder) and nbconvert must share.
(cd ../explore && ../../../$BIN/jupyter nbconvert --to html --execute explore.ipynb \
  --output explore.html --log-level ERROR --KernelManager.transport=ipc)
echo "executed notebook: $DEMO/explore/explore.html"
echo "run report:        $DEMO/wine-report.html"

say "cellpipe ui: the local web UI on this project, a few pages captured to $DEMO/ui/*.png, stopped"
# Headless Chromium (Debian's, through Playwright) takes the screenshots; install-chromium.sh
# installs it as root when missing, and without it this part is skipped with a note. The UI is
# started on a free loopback port and stopped with Ctrl-C.
(cd ../../.. && bash scripts/install-chromium.sh) || true
UI_JSON=$(mktemp)
$CP ui --port 0 --json --no-browser >"$UI_JSON" &
UI_PID=$!
trap 'kill -INT $UI_PID 2>/dev/null || true; rm -f "$UI_JSON"' EXIT
UI_URL=""
for _ in $(seq 300); do  # {"url": ...} once it accepts connections
  UI_URL=$(../../../$BIN/python -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$UI_JSON" 2>/dev/null) && break
  sleep 0.1
done
[ -n "$UI_URL" ] || { echo "cellpipe ui did not start" >&2; exit 1; }
echo "cellpipe ui is at $UI_URL"
status=0
../../../$BIN/python ../../../scripts/demo_ui_screenshots.py "$UI_URL" ../ui "$FIRST" "$LAST" || status=$?
if [ "$status" -eq 3 ]; then
  echo "(screenshots skipped: install Debian's chromium and playwright, see README \"Web UI\")"
elif [ "$status" -ne 0 ]; then
  kill -INT $UI_PID 2>/dev/null || true; exit "$status"
fi
kill -INT $UI_PID && wait $UI_PID || true
rm -f "$UI_JSON"
trap - EXIT

say "cellpipe doctor: the database, the artifact store, permissions and free space, checked"
$CP doctor
