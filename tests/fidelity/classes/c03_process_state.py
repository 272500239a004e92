# Item 3: settings and process state changed in a step are lost in later steps; `check`
# warns (code process-state) with the cell, the line and the fix.

# %% tags=["imports"]
import os

import numpy as np

# %% tags=["step:setup"]
os.environ["MODE"] = "fast"
np.set_printoptions(precision=2)
values = np.array([1.23456, 2.34567])

# %% tags=["step:use", "prev:setup"]
mode = os.environ.get("MODE", "unset")
print(mode, values)

# %% tags=["pipeline-metrics"]
mode
