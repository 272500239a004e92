# Item 5: a step name used again further down.

# %% tags=["step:a"]
x = 1

# %% tags=["step:b"]
y = x + 1

# %% tags=["step:a"]
x = 10

# %% tags=["pipeline-metrics"]
y
