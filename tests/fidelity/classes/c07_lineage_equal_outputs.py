# Item 7: two steps output equal values; lineage names each step as the producer of its own
# output.

# %% tags=["step:left"]
x = 1

# %% tags=["step:right"]
y = 1

# %% tags=["step:join"]
z = x + y

# %% tags=["pipeline-metrics"]
z
