"""KServe's runtime for scikit-learn, run by a KServe venv's python for test_kserve_differences.

    CELLPIPE_PEER_PORT=... CELLPIPE_PEER_MODEL=model.joblib python kserve_peer.py

A `kserve.ModelServer` (REST only, one worker, 127.0.0.1) serving the joblib file as model
``wine`` with what KServe's sklearnserver ``SKLearnModel.predict`` does: `get_predict_input`
(the first input as numpy, or a DataFrame of every input with ``content_type: pd``),
``predict``, `get_predict_response`; any exception becomes KServe's ``InferenceError``.
KServe 0.21 hard-codes uvicorn's host to 0.0.0.0; this process narrows it to loopback.
"""

import os

import uvicorn

_Config = uvicorn.Config


class _LoopbackConfig(_Config):
    def __init__(self, *args, **kwargs):
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


uvicorn.Config = _LoopbackConfig

import joblib  # noqa: E402
import kserve  # noqa: E402
from kserve.errors import InferenceError  # noqa: E402
from kserve.utils.utils import get_predict_input, get_predict_response  # noqa: E402


class SKLearnModel(kserve.Model):
    def __init__(self, name, path):
        super().__init__(name)
        self._model = joblib.load(path)
        self.ready = True

    def predict(self, payload, headers=None, response_headers=None):
        try:
            result = self._model.predict(get_predict_input(payload))
            return get_predict_response(payload, result, self.name)
        except Exception as exc:
            raise InferenceError(str(exc)) from exc


if __name__ == "__main__":
    model = SKLearnModel("wine", os.environ["CELLPIPE_PEER_MODEL"])
    port = int(os.environ["CELLPIPE_PEER_PORT"])
    kserve.ModelServer(http_port=port, enable_grpc=False, workers=1).start([model])
