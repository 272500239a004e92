# Item 2: `random.seed` in a step; a later, otherwise independent step draws from the stream.

# %% tags=["imports"]
import random

# %% tags=["step:seed"]
random.seed(7)
a = random.random()

# %% tags=["step:draw"]
b = random.random()

# %% tags=["step:total"]
total = a + b

# %% tags=["pipeline-metrics"]
total
