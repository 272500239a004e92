# Item 6: array, dict and list metrics are recorded as they are (numpy arrays as lists).

# %% tags=["imports"]
import numpy as np

# %% tags=["step:score"]
per_class = np.array([0.5, 0.25, 1.0])
report = {"precision": 0.75, "recall": [1, 0]}
accuracy = 0.875

# %% tags=["pipeline-metrics"]
per_class
report
accuracy
