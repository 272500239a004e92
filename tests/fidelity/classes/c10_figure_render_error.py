# Item 10: a figure that cannot be rendered (bad mathtext) is a warning, not a failed step.

# %% tags=["imports"]
import matplotlib.pyplot as plt

# %% tags=["step:plot"]
fig, ax = plt.subplots()
ax.plot([1, 2, 3], [1, 4, 9])
ax.set_title(r"$\frac{1$")
points = 3
print("plotted", points)

# %% tags=["step:after", "prev:plot"]
doubled = points * 2

# %% tags=["pipeline-metrics"]
doubled
