# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Diamond (standard library only)
#
# `a` draws numbers; `b` and `c` summarise them independently; `d` joins both summaries.
# The `scaled` helper in the functions cell reads the `SCALE` parameter, so any step that calls it
# reads `SCALE` too.

# %% tags=["imports"]
import math
import random
import statistics

# %% tags=["pipeline-parameters"]
N = 200
SEED = 7
SCALE = 2.5
LABEL = "diamond"


# %% tags=["functions"]
def scaled(values):
    """Return the values multiplied by the SCALE parameter."""
    return [value * SCALE for value in values]


# %% tags=["step:a"]
rng = random.Random(SEED)
numbers = [rng.gauss(0, 1) for _ in range(N)]

# %% tags=["step:b", "prev:a"]
mean = statistics.fmean(numbers)
spread = statistics.pstdev(scaled(numbers))

# %% tags=["step:c", "prev:a"]
squares = [x * x for x in numbers]
rms = math.sqrt(statistics.fmean(squares))

# %% [markdown]
# `d` has no `prev:` tag: it runs after `b` and `c` because it reads their variables.

# %% tags=["step:d"]
summary = {"label": LABEL, "mean": round(mean, 4), "spread": round(spread, 4), "rms": round(rms, 4)}
print(summary)

# %% tags=["pipeline-metrics"]
mean
rms
