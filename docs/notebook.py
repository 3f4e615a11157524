# %% [markdown]
# # nnexp from a notebook
#
# Cells in the `# %%` format (VS Code, PyCharm, Jupytext open this file as a notebook). Run them in a folder of
# your choice: the store (`mlflow.db`), `multirun/` and `reports/` go there, as with `python -m nnexp`.
# As a plain script, run it through `python -c "import runpy; runpy.run_path('docs/notebook.py')"`: a sweep under
# the basic launcher starts a helper process, which re-imports a script's top-level code unless it sits under
# `if __name__ == "__main__":` (Python's multiprocessing rule).

# %% A sweep from a cell: the overrides of `python -m nnexp -m ...`, its runs back as a DataFrame
import mlflow
import nnexp
from nnexp.data import load

runs = nnexp.sweep(["dataset=moons", "activation=relu,tanh", "epochs=40", "seed=0,1", "tracking.report=false"],
                   experiment="notebook")
print(runs[["activation", "seed", "outcome", "val_loss", "val_accuracy", "test_accuracy"]])

# %% Compare: one row per run, so pandas does the rest
summary = runs.groupby("activation")[["val_loss", "val_accuracy"]].agg(["mean", "std"])
print(summary)

# %% Another sweep in the same kernel (Hydra's global state is reset each time)
more = nnexp.sweep(["dataset=moons", "activation=relu", "epochs=40", "seed=2", "tracking.report=false"],
                   experiment="notebook")
every = nnexp.load_runs(experiment="notebook")
print(f"{len(runs)} + {len(more)} runs; the experiment holds {len(every)}")

# %% The best run's network, on raw features (the data's own units)
best = every.sort_values("val_loss").iloc[0]
net = nnexp.load_model(best.run_id)
raw = load("moons", standardize=False)  # the runs' split, unstandardised
accuracy = (net.predict(raw.X_test) == raw.y_test).mean()
print(f"{net}: test accuracy {accuracy:.4f} (logged: {best.test_accuracy:.4f})")
assert accuracy == best.test_accuracy

# %% The same network as an MLflow model: what `mlflow models serve -m runs:/<id>/model` serves
mlflow.set_tracking_uri("sqlite:///mlflow.db")
model = mlflow.pyfunc.load_model(f"runs:/{best.run_id}/model")
proba = model.predict(raw.X_test)  # shape (n_samples, n_classes)
print(proba[:3].round(3))
assert (proba.argmax(axis=1) == net.predict(raw.X_test)).all()
