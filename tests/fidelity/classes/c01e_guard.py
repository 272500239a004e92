# Item 1, the runtime guard: a change the analysis cannot see (operator.setitem) must stop
# the run with the step and the variable named, never give later steps the old value.

# %% tags=["imports"]
import operator

# %% tags=["step:load"]
settings = {"mode": "slow"}

# %% tags=["step:tweak", "prev:load"]
operator.setitem(settings, "mode", "fast")

# %% tags=["step:report", "prev:tweak"]
mode = settings["mode"]
print(mode)

# %% tags=["pipeline-metrics"]
mode
