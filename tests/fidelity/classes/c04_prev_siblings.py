# Item 4: two `prev:make` siblings change the same generator; Jupyter runs them in order.

# %% tags=["imports"]
import random

# %% tags=["step:make"]
rng = random.Random(0)

# %% tags=["step:left", "prev:make"]
a = rng.random()

# %% tags=["step:right", "prev:make"]
b = rng.random()

# %% tags=["step:join", "prev:left", "prev:right"]
total = a + 2 * b

# %% tags=["pipeline-metrics"]
total
