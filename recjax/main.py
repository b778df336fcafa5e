"""The `recjax` command line, the only place that defines flags.

  recjax train    --config configs/x.py[:arg] --workdir DIR [--config.a.b=value ...]
  recjax evaluate --config ... --workdir DIR
  recjax export   --config ... --workdir DIR [--output DIR]
  recjax predict  --config ... --workdir DIR --input FILE --output FILE.csv
  recjax stats    --config ... [--split eval] [--output FILE.json]
  recjax serve    --config ... --workdir DIR [--store redis://H:P/DB] [--host H] [--port P]
  recjax features load --config ... --entity user|item [--input FILES] [--store URL]
  recjax prepare  --dataset movielens|amazon_electronics [--variant full|smoke] [--source DIR]
  recjax replay join     --config ... --replay DIR --labels GLOB --output DIR [--engine spark]
  recjax replay coverage --config ... --replay DIR [--output report.json] [--plot coverage.png]
  recjax replay verify   --config ... --workdir DIR --replay DIR

`train` resumes from the workdir's last checkpoint, then evaluates and exports (unless
--no-eval / --no-export) and prints a one-line JSON summary. `prepare` writes the files a
dataset's configs read (loading a config never writes). Bad input exits with status 2
and a message naming the key, file or line; nothing else is printed as a traceback.
"""

import argparse
import dataclasses
import os
import pathlib
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")     # before TensorFlow is first imported

from recjax import config as config_lib                  # noqa: E402
from recjax import distributed                           # noqa: E402
from recjax import jsonio                                # noqa: E402
from recjax.datasets import amazon, movielens, paths, synthetic_ranking  # noqa: E402
from recjax.errors import DataError, RecjaxError         # noqa: E402

# `recjax prepare --dataset NAME`: modules with VARIANTS and prepare_variant(variant, source)
DATASETS = {"movielens": movielens, "amazon_electronics": amazon,
            "synthetic_ranking": synthetic_ranking}


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="recjax", description=__doc__.split("\n\n")[0],
      epilog="Override any config value with --config.KEY=VALUE, e.g. --config.train.steps=200.")
  commands = parser.add_subparsers(dest="command", required=True)
  for name, help_ in [("train", "train (resuming), then evaluate and export"),
                      ("evaluate", "evaluate the last checkpoint on data.eval"),
                      ("export", "write a SavedModel from the last checkpoint"),
                      ("predict", "write probabilities for the rows of a file")]:
    command = commands.add_parser(name, help=help_)
    command.add_argument("--config", required=True, help="configs/<exp>.py[:arg]")
    command.add_argument("--workdir", required=True, help="checkpoints, logs, exports")
    if name == "train":
      command.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
      command.add_argument("--no-export", action="store_true", help="skip the SavedModel")
      command.add_argument("--init_from", help="warm start from this workdir's last checkpoint "
                           "(yesterday's run) when WORKDIR has none (train.init_from)")
    if name == "export":
      command.add_argument("--output", help="a TF-Serving base path: writes version <step> in it, "
                           "touching nothing else (default WORKDIR/export/<model_name>)")
    if name == "predict":
      command.add_argument("--input", required=True, help="a data file in the config's format")
      command.add_argument("--output", required=True, help="CSV file of probabilities")
  serve = commands.add_parser("serve", help="TF-Serving's REST API and :rank for the newest "
                              "exported version, swapping in new ones as they appear")
  serve.add_argument("--config", required=True, help="configs/<exp>.py[:arg]")
  serve.add_argument("--workdir", required=True, help="the run whose export/ is served")
  serve.add_argument("--store", help="redis://HOST:PORT/DB (default serving.store; none: the "
                     "embedded store, the entities' Parquet files in memory)")
  serve.add_argument("--host", default="127.0.0.1")
  serve.add_argument("--port", type=int, default=8501)
  features = commands.add_parser("features", help="the feature store: `features load` writes "
                                 "an entity's raw values as a new version, then switches to it")
  features.add_argument("action", choices=("load",))
  features.add_argument("--config", required=True, help="configs/<exp>.py[:arg]")
  features.add_argument("--entity", required=True, choices=("user", "item"))
  features.add_argument("--input", nargs="+", help="Parquet files (default serving.<entity>.files)")
  features.add_argument("--store", help="redis://HOST:PORT/DB (default serving.store)")
  stats = commands.add_parser("stats", help="per-feature coverage, cardinality, top values, "
                              "quantiles and proposed boundaries of a split's raw columns")
  stats.add_argument("--config", required=True, help="configs/<exp>.py[:arg]")
  stats.add_argument("--split", default="train", choices=("train", "eval"))
  stats.add_argument("--output", help="JSON file of the statistics")
  replay = commands.add_parser("replay", help="the replay log: join labels to it (training "
                               "data), watch its coverage, re-score it (parity)")
  replay.add_argument("action", choices=("join", "coverage", "verify"))
  replay.add_argument("--config", required=True, help="configs/<exp>.py[:arg]")
  replay.add_argument("--replay", required=True, help="the replay log's directory")
  replay.add_argument("--labels", help="join: Parquet files of label events (a glob)")
  replay.add_argument("--output", help="join: the output directory; coverage: report.json")
  replay.add_argument("--engine", default="duckdb", choices=("duckdb", "spark"))
  replay.add_argument("--key", default="event_id", choices=("event_id", "request_id"),
                      help="join: what label events name the impression by")
  replay.add_argument("--until-ms", type=int, help="join: labels are complete up to this "
                      "time (default: the latest label event)")
  replay.add_argument("--plot", help="coverage: a PNG of every feature's coverage over time")
  replay.add_argument("--workdir", help="verify: the run whose exports and checkpoints served")
  prepare = commands.add_parser("prepare", help="write the files a dataset's configs read "
                                f"(under ${paths.PREPARED_ENV}, from ${paths.DATA_ENV})")
  prepare.add_argument("--dataset", required=True, choices=sorted(DATASETS))
  prepare.add_argument("--variant", help="which files (default: the dataset's first: "
                       + "; ".join(f"{k} {'|'.join(m.VARIANTS)}" for k, m in DATASETS.items())
                       + ")")
  prepare.add_argument("--source", help="the raw data (default: under the shared data root)")
  return parser


def _prepare(parser, args) -> dict:
  module = DATASETS[args.dataset]
  variant = args.variant or next(iter(module.VARIANTS))
  if variant not in module.VARIANTS:
    parser.error(f"--variant {variant!r}: {args.dataset} has {', '.join(module.VARIANTS)}")
  return {"dataset": args.dataset, "variant": variant,
          "files": module.prepare_variant(variant, args.source)}


def _replay(parser, args, experiment) -> dict:
  if args.action == "join":
    if not args.labels or not args.output:
      parser.error("replay join needs --labels and --output")
    from recjax.replay import join
    return join.join(experiment, args.replay, args.labels, args.output, args.engine, args.key,
                     args.until_ms)
  if args.action == "coverage":
    from recjax.replay import coverage
    summary = coverage.run(experiment, args.replay, args.output, args.plot)
    if summary["alarms"]:
      print(jsonio.dumps(summary), flush=True)
      sys.exit(coverage.ALARM_STATUS)
    return summary
  if not args.workdir:
    parser.error("replay verify needs --workdir")
  from recjax.replay import verify
  return verify.verify(experiment, args.workdir, args.replay)


def _check_paths(args) -> None:
  """The workdir (and predict's output) are usable before any data is read: a workdir that
  is a file, a run's workdir that cannot be written, an output directory that is missing."""
  workdir = getattr(args, "workdir", None)
  if workdir:
    path = pathlib.Path(workdir)
    if path.exists() and not path.is_dir():
      raise DataError(f"--workdir {workdir}: is a file, not a directory")
    if args.command == "train" or (args.command == "export" and not args.output):
      try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
          pass
      except OSError as e:
        raise DataError(f"--workdir {workdir}: cannot be written: {e.strerror}") from None
    elif args.command in ("evaluate", "export", "predict", "serve") and not path.is_dir():
      raise DataError(f"--workdir {workdir}: no such directory (train a run there first)")
  if args.command == "predict":
    parent = pathlib.Path(args.output).absolute().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
      raise DataError(f"--output {args.output}: the directory {parent} is missing or not "
                      "writable")


def _check_prepared(experiment, args) -> None:
  """Names a prepared file that is absent, and the command that writes it, before any
  reading starts (the reader alone would only say that no file matches)."""
  splits = {"train": ("train", "eval"), "evaluate": ("eval",),
            "stats": (getattr(args, "split", ""),)}.get(args.command, ())
  patterns = [p for split in splits for p in getattr(experiment.data, split)]
  if args.command in ("train", "evaluate"):
    patterns += [p for t in experiment.tasks for p in getattr(t.retrieval, "corpus", ())]
  message = paths.missing_prepared(patterns)
  if message:
    raise DataError(message)


def _experiment(args, overrides):
  config = config_lib.load(args.config)
  for item in overrides:
    config_lib.override(config, item)
  name = os.path.splitext(os.path.basename(args.config.partition(":")[0]))[0]
  return config_lib.experiment(config, name)


def run(argv) -> dict:
  distributed.initialize()       # one of many processes? join them before JAX is used
  parser = _parser()
  args, rest = parser.parse_known_args(argv)
  overrides = []
  for item in rest:
    if not item.startswith("--config."):
      parser.error(f"unrecognized argument {item!r}")
    overrides.append(item[len("--config."):])
  if args.command == "prepare":
    return _prepare(parser, args)
  experiment = _experiment(args, overrides)
  _check_prepared(experiment, args)
  _check_paths(args)

  if args.command == "serve":
    from recjax.serve import app
    return app.serve(experiment, args.workdir, args.host, args.port, args.store)
  if args.command == "features":
    from recjax.serve import loader
    return loader.load(experiment, args.entity, args.input, args.store)
  if args.command == "stats":
    from recjax.input import stats
    return stats.run(experiment, args.split, args.output)
  if args.command == "replay":
    return _replay(parser, args, experiment)
  from recjax.train import loop as train       # jax, flax, TF: only after the config is known to be valid
  if args.command == "train":
    return train.train_and_evaluate(experiment, args.workdir, run_eval=not args.no_eval,
                                    run_export=not args.no_export, init_from=args.init_from)

  from recjax.input import pipeline as input_lib
  from recjax import sharding
  mesh = sharding.make_mesh()
  state = train.restore_state(experiment, args.workdir, mesh)
  if args.command == "evaluate":
    return {"step": int(state.step),
            "eval": train.evaluate(experiment, state, input_lib.load_split(experiment, "eval"), mesh)}
  if args.command == "export":
    from recjax.export import writes
    base = args.output or writes.base_path(experiment, args.workdir)
    written = writes.write(experiment, state, base, int(state.step))
    if not args.output:
      writes.link(args.workdir, written["saved_model"])
    return {"step": int(state.step), **written}
  rows = dataclasses.replace(experiment, data=dataclasses.replace(experiment.data, eval=(args.input,)))
  split = input_lib.load_split(rows, "eval", with_labels=False)
  from recjax.export import saved_model as export
  predictions = train.predict(experiment, state, split, mesh)
  names = export.output_names(experiment)
  columns = [np.asarray(predictions[task]).reshape(split.rows, -1) for task in names]
  header = [name if c.shape[1] == 1 else f"{name}_{j}"
            for name, c in zip(names.values(), columns) for j in range(c.shape[1])]
  table = np.concatenate(columns, 1)
  with open(args.output, "w") as f:
    f.write(",".join(header) + "\n")
    f.writelines(",".join(f"{v:.9g}" for v in row) + "\n" for row in table)
  return {"step": int(state.step), "rows": int(split.rows), "output": args.output}


def main(argv=None) -> None:
  try:
    summary = run(sys.argv[1:] if argv is None else argv)
  except RecjaxError as e:
    print(f"recjax: error: {e}", file=sys.stderr)
    sys.exit(2)
  print(jsonio.dumps(summary), flush=True)


if __name__ == "__main__":
  main()
