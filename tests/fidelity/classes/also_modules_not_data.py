# Also: modules are never data. `load` imports numpy; `left` and `right` use it and are
# independent of `load` and of each other.

# %% tags=["step:load"]
import numpy as np

base = np.arange(4)

# %% tags=["step:left"]
import numpy as np

left = float(np.sqrt(16.0))

# %% tags=["step:right"]
right = float(np.log(1.0))

# %% tags=["step:join"]
total = left + right + float(base.sum())

# %% tags=["pipeline-metrics"]
total
