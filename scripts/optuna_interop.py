"""Python Optuna against ferrograd's study storage (driven by tuning/tests/search_interop.rs).

    optuna_interop.py check  --storage URL --study NAME --expect FILE [--add N --out FILE]
        Loads the study with optuna.load_study and checks every trial (number, state, parameters,
        values, intermediate values, user attributes) against FILE, which ferrograd wrote; opens
        it through optuna-dashboard's API; then adds N trials with Optuna's TPE over the same
        parameters (and one failed trial) and writes every trial to --out for ferrograd to check.

    optuna_interop.py create --storage URL --study NAME --out FILE
        Writes a study with Optuna (every distribution kind, intermediate values, attributes,
        pruned, failed and waiting trials) and writes its trials to FILE.

URL is a path to an SQLite file or a postgresql:// URL. Exits non-zero with a message on any
difference.
"""

import argparse
import io
import json
import math
import sys
import warnings
import wsgiref.util

import optuna

optuna.logging.set_verbosity(optuna.logging.ERROR)
warnings.simplefilter("ignore")


def storage_url(s):
    if s.startswith("postgresql://"):
        return "postgresql+psycopg2://" + s[len("postgresql://"):]
    return "sqlite:///" + s


def encode(v):
    """Floats JSON cannot hold, as ferrograd's test writes them."""
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    return v


def decode(v):
    return {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}.get(v, v) if isinstance(v, str) else v


def same(a, b):
    a, b = decode(a), decode(b)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b


def record(t):
    return {
        "number": t.number,
        "state": t.state.name,
        "params": {k: encode(v) for k, v in t.params.items()},
        "values": None if t.values is None else [encode(v) for v in t.values],
        "intermediate": {str(k): encode(v) for k, v in t.intermediate_values.items()},
        "user_attrs": t.user_attrs,
    }


def fail(msg):
    print(f"optuna_interop: {msg}", file=sys.stderr)
    sys.exit(1)


def check_trials(study, expected):
    trials = study.get_trials(deepcopy=False)
    if [d.name for d in study.directions] != expected["directions"]:
        fail(f"directions {study.directions} != {expected['directions']}")
    if len(trials) != len(expected["trials"]):
        fail(f"{len(trials)} trials, expected {len(expected['trials'])}")
    for t, e in zip(trials, expected["trials"]):
        got = record(t)
        for key in ("number", "state", "user_attrs"):
            if got[key] != e[key]:
                fail(f"trial {t.number}: {key} {got[key]!r} != {e[key]!r}")
        if set(got["params"]) != set(e["params"]):
            fail(f"trial {t.number}: params {sorted(got['params'])} != {sorted(e['params'])}")
        for k, v in e["params"].items():
            if not same(got["params"][k], v):
                fail(f"trial {t.number}: param {k} = {got['params'][k]!r}, expected {v!r}")
        if (got["values"] is None) != (e["values"] is None) or (
            got["values"] is not None and not all(same(a, b) for a, b in zip(got["values"], e["values"]))
        ):
            fail(f"trial {t.number}: values {got['values']} != {e['values']}")
        if set(got["intermediate"]) != set(e["intermediate"]) or not all(
            same(got["intermediate"][k], v) for k, v in e["intermediate"].items()
        ):
            fail(f"trial {t.number}: intermediate {got['intermediate']} != {e['intermediate']}")
    return trials


def check_dashboard(url, name, n_trials):
    """The study through optuna-dashboard's JSON API (what its web page reads)."""
    import optuna_dashboard

    app = optuna_dashboard.wsgi(url)

    def get(path):
        environ = {}
        wsgiref.util.setup_testing_defaults(environ)
        environ["PATH_INFO"] = path
        status = []
        body = b"".join(app(environ, lambda s, h, *a: status.append(s)))
        if not status[0].startswith("200"):
            fail(f"optuna-dashboard {path}: {status[0]} {body[:300]!r}")
        return json.load(io.BytesIO(body))

    studies = get("/api/studies")["study_summaries"]
    match = [s for s in studies if s["study_name"] == name]
    if not match:
        fail(f"optuna-dashboard does not list {name}")
    detail = get(f"/api/studies/{match[0]['study_id']}")
    if len(detail["trials"]) != n_trials:
        fail(f"optuna-dashboard shows {len(detail['trials'])} trials, expected {n_trials}")


def space(t):
    """The parameters of ferrograd's interop study."""
    x = t.suggest_float("x", -1.0, 1.0)
    lr = t.suggest_float("lr", 1e-5, 1e-1, log=True)
    q = t.suggest_float("q", 0.0, 1.0, step=0.25)
    n = t.suggest_int("n", 1, 9, step=2)
    w = t.suggest_int("w", 1, 1024, log=True)
    c = t.suggest_categorical("c", ["relu", "tanh", "gelu"])
    return x, lr, q, n, w, c


def check(args):
    url = storage_url(args.storage)
    expected = json.load(open(args.expect))
    study = optuna.load_study(study_name=args.study, storage=url)
    trials = check_trials(study, expected)
    check_dashboard(url, args.study, len(trials))
    if args.add:
        study.sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=2)

        def objective(t):
            x, lr, q, n, w, c = space(t)
            t.report(x, 1)
            t.set_user_attr("by", "optuna")
            return x + q + n / 10 + len(c)

        study.optimize(objective, n_trials=args.add)
        t = study.ask()
        space(t)
        study.tell(t, state=optuna.trial.TrialState.FAIL)
    if args.out:
        out = {"directions": [d.name for d in study.directions], "trials": [record(t) for t in study.get_trials(deepcopy=False)]}
        json.dump(out, open(args.out, "w"), indent=1)


def create(args):
    url = storage_url(args.storage)
    study = optuna.create_study(study_name=args.study, storage=url, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=3))
    study.set_user_attr("made_by", "optuna")

    def objective(t):
        x, lr, q, n, w, c = space(t)
        for step, v in enumerate([0.5, math.nan, math.inf]):
            t.report(v, step)
        t.set_user_attr("by", "optuna")
        if t.number == 2:
            raise optuna.TrialPruned()
        if t.number == 3:
            raise ValueError("boom")
        return x + lr + q + n + w + len(c)

    study.optimize(objective, n_trials=6, catch=(ValueError,))
    study.enqueue_trial({"x": 0.5, "n": 3, "c": "tanh"})
    out = {"directions": [d.name for d in study.directions], "trials": [record(t) for t in study.get_trials(deepcopy=False)]}
    json.dump(out, open(args.out, "w"), indent=1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("command", choices=["check", "create"])
    p.add_argument("--storage", required=True)
    p.add_argument("--study", required=True)
    p.add_argument("--expect")
    p.add_argument("--add", type=int, default=0)
    p.add_argument("--out")
    args = p.parse_args()
    print(f"optuna {optuna.__version__}: {args.command} {args.study}", file=sys.stderr)
    check(args) if args.command == "check" else create(args)


if __name__ == "__main__":
    main()
