# Item 8: a step reads a file that an earlier step writes; they share no variable. The folder
# holds an old data.txt (7); the notebook gives 42. `prepare` makes the writer wait for a step the
# reader does not need.

# %% tags=["step:prepare"]
base = sum(range(2_000_000))

# %% tags=["step:write", "prev:prepare"]
with open("data.txt", "w") as f:
    f.write(str(42 + 0 * base))

# %% tags=["step:read"]
with open("data.txt") as f:
    value = int(f.read())
print(value)

# %% tags=["pipeline-metrics"]
value
