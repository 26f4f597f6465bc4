"""Reads ferrograd's TensorBoard logs with TensorBoard's own readers and checks them.

    python train/scripts/check_tensorboard.py ROOT

ROOT holds run directories written by ferrograd-train's TensorBoardLogger next to a JSON-lines
log of the same run (`log.jsonl`, from JsonlLogger with per-step lines): the test
`cargo test -p ferrograd-train --test all tensorboard::` with FERROGRAD_TB_CHECK_DIR=ROOT writes two,
and `mnist_mlp --logdir ROOT/mnist_mlp` one. For every run directory:

- every scalar of the JSON-lines log is in TensorBoard's EventAccumulator (and in the
  plugin-side accumulator the TensorBoard server reads), at its step, with its value exactly
  (as the 32-bit float TensorBoard stores), and nothing else is (after TensorBoard's purge of
  a restarted run's stale events);
- with `expect.json`: a histogram of every parameter's weights and gradients at each epoch's
  end, bucket counts summing to the parameter's size;
- with `expect.json`: the HParams session's hyperparameters, read by the HParams plugin's own
  backend (GetExperiment and ListSessionGroups, what TensorBoard's HParams view shows).

Exits non-zero with a message on the first difference.
"""

import json
import math
import os
import sys

import numpy as np
from tensorboard import context as tb_context
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import HISTOGRAMS, SCALARS, EventAccumulator
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator as PluginAccumulator
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, get_experiment, list_session_groups
from tensorboard.util import tensor_util


def fail(msg):
    print(f"check_tensorboard: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def number(v):
    return float(v) if not isinstance(v, str) else float({"NaN": "nan"}.get(v, v))


def expected_scalars(run_dir):
    """(run, tag, step) -> float32 value, from the JSON-lines log."""
    out = {}
    with open(os.path.join(run_dir, "log.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            step = rec["step"]
            for k, v in rec.items():
                if k in ("kind", "step", "epoch"):
                    continue
                if rec["kind"] == "step":
                    key = ("train", f"batch_{k}")
                elif k.startswith("val_"):
                    key = ("validation", f"epoch_{k[4:]}")
                else:
                    key = ("train", f"epoch_{k}")
                out[(key[0], key[1], step)] = np.float32(number(v))
    return out


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or np.float32(a) == np.float32(b)


def check_scalars(run_dir):
    want = expected_scalars(run_dir)
    got, got_plugin = {}, {}
    for sub in ("train", "validation"):
        path = os.path.join(run_dir, sub)
        acc = EventAccumulator(path, size_guidance={SCALARS: 0, HISTOGRAMS: 0}, purge_orphaned_data=True)
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            for e in acc.Scalars(tag):
                got[(sub, tag, e.step)] = e.value
        # The server's path: simple_value migrated to the scalars plugin's tensors.
        pacc = PluginAccumulator(path, size_guidance={"tensors": 0}, purge_orphaned_data=True)
        pacc.Reload()
        for tag in pacc.PluginTagToContent("scalars"):
            for e in pacc.Tensors(tag):
                got_plugin[(sub, tag, e.step)] = float(tensor_util.make_ndarray(e.tensor_proto))
    for name, have in (("EventAccumulator", got), ("plugin EventAccumulator", got_plugin)):
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        if missing or extra:
            fail(f"{run_dir}: {name}: missing {missing[:5]} extra {extra[:5]}")
        for key, v in want.items():
            if not same(have[key], v):
                fail(f"{run_dir}: {name}: {key} is {have[key]!r}, the log says {float(v)!r}")
    return len(want)


def check_histograms(run_dir, expect):
    path = os.path.join(run_dir, "train")
    acc = EventAccumulator(path, size_guidance={HISTOGRAMS: 0}, purge_orphaned_data=True)
    acc.Reload()
    pacc = PluginAccumulator(path, size_guidance={"tensors": 0}, purge_orphaned_data=True)
    pacc.Reload()
    plugin_tags = pacc.PluginTagToContent("histograms")
    n = 0
    for name, numel in expect["histograms"].items():
        for kind in ("weights", "gradients"):
            tag = f"{kind}/{name}"
            events = acc.Histograms(tag)
            if len(events) != expect["epochs"]:
                fail(f"{run_dir}: {tag}: {len(events)} histograms, expected one per epoch ({expect['epochs']})")
            for e in events:
                h = e.histogram_value
                if h.num != numel or sum(h.bucket) != numel or not h.min <= h.max:
                    fail(f"{run_dir}: {tag} at step {e.step}: num {h.num}, buckets sum {sum(h.bucket)}, size {numel}")
            if tag not in plugin_tags:
                fail(f"{run_dir}: the histograms plugin does not list {tag}")
            for e in pacc.Tensors(tag):
                buckets = tensor_util.make_ndarray(e.tensor_proto)
                if buckets.shape[1] != 3 or buckets[:, 2].sum() != numel:
                    fail(f"{run_dir}: {tag}: the histograms plugin sees buckets {buckets.shape}")
            n += len(events)
    return n


def hparams_backend(logdir):
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, logdir)
    ctx = backend_context.Context(base_plugin.TBContext(logdir=logdir, multiplexer=mux, data_provider=provider))
    return ctx, tb_context.RequestContext()


def check_hparams(root, runs):
    """The HParams view over ROOT: one session per run with expect.json, with its hparams."""
    ctx, rctx = hparams_backend(root)
    experiment = get_experiment.Handler(rctx, ctx, "", api_pb2.GetExperimentRequest()).run()
    names = {h.name for h in experiment.hparam_infos}
    metrics = {(m.name.group, m.name.tag) for m in experiment.metric_infos}
    request = api_pb2.ListSessionGroupsRequest(
        start_index=0,
        slice_size=1000,
        allowed_statuses=[
            api_pb2.STATUS_UNKNOWN,
            api_pb2.STATUS_SUCCESS,
            api_pb2.STATUS_FAILURE,
            api_pb2.STATUS_RUNNING,
        ],
    )
    groups = list_session_groups.Handler(rctx, ctx, "", request).run().session_groups
    sessions = {s.name: (g, s) for g in groups for s in g.sessions}
    for run_dir, expect in runs:
        name = os.path.relpath(run_dir, root)
        if not set(expect["hparams"]) <= names:
            fail(f"{run_dir}: the HParams experiment has hparams {sorted(names)}")
        if ("validation", "epoch_loss") not in metrics:
            fail(f"{run_dir}: the HParams experiment has metrics {sorted(metrics)}")
        if name not in sessions:
            fail(f"{run_dir}: no HParams session `{name}` (sessions: {sorted(sessions)})")
        group, session = sessions[name]
        for k, v in expect["hparams"].items():
            value = group.hparams[k]
            have = {"number_value": value.number_value, "string_value": value.string_value,
                    "bool_value": value.bool_value}[value.WhichOneof("kind")]
            if have != v:
                fail(f"{run_dir}: hparam {k} is {have!r}, expected {v!r}")
        if session.status != api_pb2.STATUS_SUCCESS:
            fail(f"{run_dir}: session status {session.status}, expected success")
        last = expected_scalars(run_dir)
        final_loss = max((s, v) for (r, t, s), v in last.items() if (r, t) == ("validation", "epoch_loss"))[1]
        seen = {(m.name.group, m.name.tag): m.value for m in session.metric_values}
        if not same(seen[("validation", "epoch_loss")], final_loss):
            fail(f"{run_dir}: the HParams view's final validation loss {seen} is not {final_loss}")
    return len(runs)


def main():
    if len(sys.argv) != 2:
        fail("usage: check_tensorboard.py ROOT")
    root = sys.argv[1]
    run_dirs = sorted(
        os.path.join(root, d) for d in os.listdir(root) if os.path.exists(os.path.join(root, d, "log.jsonl"))
    )
    if not run_dirs:
        fail(f"no run directories (with log.jsonl) under {root}")
    with_hparams = []
    for run_dir in run_dirs:
        n = check_scalars(run_dir)
        line = f"{run_dir}: {n} scalars exact"
        expect_path = os.path.join(run_dir, "expect.json")
        if os.path.exists(expect_path):
            with open(expect_path) as f:
                expect = json.load(f)
            line += f", {check_histograms(run_dir, expect)} histograms"
            with_hparams.append((run_dir, expect))
        print(line)
    if with_hparams:
        print(f"{root}: HParams view lists {check_hparams(root, with_hparams)} sessions with their hparams")
    print("check_tensorboard: OK")


if __name__ == "__main__":
    main()
