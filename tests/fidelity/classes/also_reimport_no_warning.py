# Also: re-importing in a step a name the imports cell binds is not worth a warning.

# %% tags=["imports"]
import math

# %% tags=["step:compute"]
import math

root = math.sqrt(81)

# %% tags=["pipeline-metrics"]
root
