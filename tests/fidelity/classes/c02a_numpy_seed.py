# Item 2: the global numpy generator is seeded once; later steps continue its stream.

# %% tags=["imports"]
import numpy as np

np.random.seed(42)

# %% tags=["step:first"]
x = np.random.rand(3)

# %% tags=["step:second"]
y = np.random.rand(3)

# %% tags=["step:total"]
total = float(x.sum() + 10 * y.sum())
print(round(total, 6))

# %% tags=["pipeline-metrics"]
total
