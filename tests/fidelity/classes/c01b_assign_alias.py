# Item 1: a second name for the same dict, changed through that name.

# %% tags=["step:load"]
config = {"lr": 0.1}

# %% tags=["step:tune", "prev:load"]
c = config
c["lr"] = 0.5
c["epochs"] = 3

# %% tags=["step:report", "prev:tune"]
lr = config["lr"]
epochs = config.get("epochs", 0)
print(sorted(config.items()))

# %% tags=["pipeline-metrics"]
lr
epochs
