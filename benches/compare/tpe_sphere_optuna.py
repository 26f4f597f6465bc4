"""Optuna 5.1's default TPESampler on the 10-D sphere of tuning/tests/search_tpe.rs (x_i in [-5, 5],
100 trials): the best value per seed, the median and the mean log best over seeds FIRST..LAST-1.

    /work/pyenv/bin/python benches/compare/tpe_sphere_optuna.py FIRST LAST
"""

import math
import statistics
import sys
import warnings

import optuna


def sphere(trial):
    return sum(trial.suggest_float(f"x{i}", -5.0, 5.0) ** 2 for i in range(10))


def main():
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore")
    first, last = int(sys.argv[1]), int(sys.argv[2])
    bests = []
    for seed in range(first, last):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(sphere, n_trials=100)
        bests.append(study.best_value)
        print(seed, study.best_value, flush=True)
    print(f"median {statistics.median(bests):.4f} mean log {statistics.mean(math.log(b) for b in bests):.4f}")


if __name__ == "__main__":
    main()
