"""The `twotower` command line: train, eval, export, server. Flags are read only here.

  twotower train  --dataset=movielens-100k --loss=inbatch_softmax --model_dir=runs/tt
  twotower eval   --model_dir=runs/tt
  twotower export --model_dir=runs/tt --output=export/tt
The library takes the frozen `Config` that `twotower.config.resolve` builds from the flags.
"""
from absl import flags
from absl import logging

from tf_embeddings.data.errors import UserError
from tf_embeddings.flags import cluster_flags
from tf_embeddings.flags import twotower_flags
from tf_embeddings.training import app as app_lib
from tf_embeddings.twotower import config as config_lib

FLAGS = flags.FLAGS

USAGE = ("usage: twotower {train,eval,export} --model_dir=DIR [flags] | twotower server "
         "(TF_CONFIG)  (twotower --helpshort for flags)")


# Heavy imports inside the actions, after flag parsing, so that --help and flag errors
# are fast.


def _train():
  from tf_embeddings.training import distribute  # pylint: disable=import-outside-toplevel
  from tf_embeddings.twotower import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel
  from tf_embeddings.twotower import train as train_lib  # pylint: disable=import-outside-toplevel
  config = twotower_flags.config_from_flags(FLAGS)
  if FLAGS.strategy == "multi_worker" and FLAGS.local_cluster:
    # Every worker runs this same train (worker 0 writes the run): this process starts
    # them and passes worker 0's output and exit status through.
    workers, ps = cluster_flags.local_cluster(FLAGS)
    if ps:
      raise UserError("--strategy=multi_worker has no parameter servers: use "
                      "--local_cluster=workers:N")
    rc = distribute.run_local_workers("tf_embeddings.twotower", workers, FLAGS.cluster_timeout)
    if rc:
      raise SystemExit(rc)
    return
  if FLAGS.strategy == "parameter_server" and config.train.average_momentum:
    # Checked again in train(); here before any server is started.
    raise UserError("--average_momentum (weight averaging, on by default) does not run on "
                    "parameter-server clusters yet: pass --average_momentum=0 with "
                    "--strategy=parameter_server")
  with distribute.distribution(
      "twotower", "tf_embeddings.twotower", FLAGS.strategy, twotower_flags.STRATEGIES,
      FLAGS.num_ps_shards, cluster_flags.local_cluster(FLAGS),
      FLAGS.cluster_timeout) as dist:
    _, last = train_lib.train(config, resume=FLAGS.resume, dist=dist,
                              cluster_input=FLAGS.cluster_input)
  if last:
    main_metrics = last["seen_included" if config.train.include_seen else "seen_excluded"]
    print(f"trained {config.model_dir}: {evaluate_lib.summary(main_metrics)}")
    for name, figures in last.get("tasks", {}).items():
      print(f"  {name}: {evaluate_lib.summary(figures)}")


def _eval():
  from tf_embeddings.twotower import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel
  config, prepared, two_tower = evaluate_lib.restore(FLAGS.model_dir)
  # Every user of the split unless --eval_users is given.
  max_users = FLAGS.eval_users if FLAGS["eval_users"].present else 0
  both = evaluate_lib.evaluate_both(two_tower, prepared, FLAGS.eval_split,
                                    config.train.temperature, config.train.tasks,
                                    max_users=max_users, seed=config.train.seed)
  primary = "seen_included" if FLAGS.include_seen else "seen_excluded"
  result = {"split": FLAGS.eval_split, "primary": primary, **both}
  if prepared.cold is not None:
    result["cold_users"] = evaluate_lib.evaluate_cold(two_tower, prepared,
                                                      config.train.temperature)
  config_lib.run_dir(FLAGS.model_dir).save_eval(result)
  if "users" in both:
    print(f"{FLAGS.eval_split}: a sample of {both['users']['evaluated']:,} of "
          f"{both['users']['in_split']:,} users")
  for name in (primary, "seen_included" if primary == "seen_excluded" else "seen_excluded"):
    print(f"{FLAGS.eval_split} ({name.replace('_', ' ')}): "
          f"{evaluate_lib.summary(both[name])}")
  for name, figures in both.get("tasks", {}).items():
    print(f"{FLAGS.eval_split} ({name}): {evaluate_lib.summary(figures)}")
  for name, figures in result.get("cold_users", {}).items():
    print(f"cold users ({name.replace('_', '-')}): {evaluate_lib.summary(figures)}")


def _export():
  from tf_embeddings.twotower import export as export_lib  # pylint: disable=import-outside-toplevel
  if not FLAGS.output:
    raise UserError("export needs --output=<directory>")
  paths = export_lib.export(FLAGS.model_dir, FLAGS.output, FLAGS.top_k, FLAGS.overwrite)
  for k, v in paths.items():
    print(f"{k}: {v}")


def main(argv):
  """Dispatches the positional action."""
  actions = list(argv[1:])
  if len(actions) != 1 or actions[0] not in twotower_flags.ACTIONS:
    raise UserError(f"expected one action, got {' '.join(actions) or 'none'}: {USAGE}")
  action = actions[0]
  if action == "server":
    from tf_embeddings.training import distribute  # pylint: disable=import-outside-toplevel
    distribute.serve()
    return 0
  if not FLAGS.model_dir:
    raise UserError(f"--model_dir is required: {USAGE}")
  app_lib.import_tensorflow()
  {"train": _train, "eval": _eval, "export": _export}[action]()
  return 0


HELP = """usage: twotower ACTION --model_dir=DIR [--flags]

actions:
  train   learn the query and item towers from --dataset in --model_dir (run it again to
          resume)
  eval    evaluate the run in --model_dir against every item, write its eval.json
  export  write item embeddings and a top-K query SavedModel to --output
"""


def run():
  """Console-script entry point."""
  twotower_flags.define_twotower_flags()
  logging.set_verbosity(logging.INFO)
  app_lib.run(main, usage=HELP, flag_module=twotower_flags.__name__)
