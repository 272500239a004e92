# Item 11 in a percent script: `# %%time` under a cell marker is a commented magic (jupytext),
# not a cell marker.

# %% tags=["step:compute"]
# %%time
values = [i * i for i in range(100)]
total = sum(values)

# %% tags=["step:quiet", "prev:compute"]
# %%capture captured
print("hidden")
half = total // 2

# %% tags=["step:report", "prev:quiet"]
answer = total + half
print(answer)

# %% tags=["pipeline-metrics"]
answer
