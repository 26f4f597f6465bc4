"""ZDT1 (10-D, 300 trials) with Optuna 5.1's NSGA-II and multi-objective TPE at their defaults.

Prints, per sampler, the hypervolume of the complete trials' values (reference point (1.1, 11.0))
for seeds 0..9 and their median. The same protocol as tuning/tests/search_nsga2.rs; the medians
are committed in benches/compare/README.md.

    /work/pyenv/bin/python benches/compare/zdt1_optuna.py [nsga2|motpe|all]
"""

import statistics
import sys

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume

DIM = 10
TRIALS = 300
REFERENCE = np.array([1.1, 11.0])


def zdt1(trial):
    x = [trial.suggest_float(f"x{i}", 0.0, 1.0) for i in range(DIM)]
    f1 = x[0]
    g = 1.0 + 9.0 * sum(x[1:]) / (DIM - 1)
    return f1, g * (1.0 - (f1 / g) ** 0.5)


def run(make_sampler, seed):
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=make_sampler(seed))
    study.optimize(zdt1, n_trials=TRIALS)
    values = np.array([t.values for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE])
    inside = values[np.all(values < REFERENCE, axis=1)]
    return compute_hypervolume(inside, REFERENCE) if len(inside) else 0.0


def main():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    which = sys.argv[1] if len(sys.argv) > 1 else "all"
    samplers = {
        "nsga2": lambda s: optuna.samplers.NSGAIISampler(seed=s),
        "motpe": lambda s: optuna.samplers.TPESampler(seed=s),
    }
    for name, make in samplers.items():
        if which not in ("all", name):
            continue
        hvs = [run(make, seed) for seed in range(10)]
        print(f"{name}: hypervolumes {[round(h, 4) for h in hvs]} median {statistics.median(hvs):.4f}", flush=True)


if __name__ == "__main__":
    main()
