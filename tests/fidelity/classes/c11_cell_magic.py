# Item 11: a step that starts with a cell magic whose body is Python (%%time, %%capture).

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
