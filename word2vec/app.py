"""The `word2vec` command line: train, eval, export, vocab. Flags are read only here."""
import dataclasses
import json

from absl import flags
from absl import logging

from tf_embeddings.data import atomic
from tf_embeddings.data import corpus as corpus_lib
from tf_embeddings.data.errors import UserError
from tf_embeddings.data.vocab import Vocabulary
from tf_embeddings.flags import cluster_flags
from tf_embeddings.flags import word2vec_flags
from tf_embeddings.training import app as app_lib
from tf_embeddings.word2vec import config as config_lib

FLAGS = flags.FLAGS
USAGE = ("usage: word2vec {train,eval,export,vocab} [--flags] | word2vec server (TF_CONFIG)   "
         "(word2vec --helpfull lists every flag)")


def _train(config):
  """Trains in this process (--strategy=default) or as the chief of a cluster."""
  local_cluster = cluster_flags.local_cluster(FLAGS)
  if FLAGS.strategy == "default" and not local_cluster:
    figures = _train_one_process(config)
  else:
    app_lib.import_tensorflow()
    # pylint: disable=import-outside-toplevel
    from tf_embeddings.training import distribute
    from tf_embeddings.word2vec import train as train_lib
    if FLAGS.strategy == "parameter_server":
      train_lib.check_cluster_config(config)  # before any server is started
    with distribute.distribution(
        "word2vec", "tf_embeddings.word2vec", FLAGS.strategy, word2vec_flags.STRATEGIES,
        FLAGS.num_ps_shards, local_cluster, FLAGS.cluster_timeout) as dist:
      figures = train_lib.train(config, dist, cluster_input=FLAGS.cluster_input)
  print(json.dumps(figures, indent=2, sort_keys=True))


def _train_one_process(config):
  """train.train in one process, with the run prepared (start over or resume checks,
  vocabulary, encoded ids: word2vec/run.py) while TensorFlow is imported."""
  # pylint: disable=import-outside-toplevel
  from tf_embeddings.training import distribute
  from tf_embeddings.word2vec import run as run_lib
  with config_lib.run_dir(config.model_dir).training() as rundir:
    timings = run_lib.new_timings()
    prepared = app_lib.import_tensorflow_while(
        lambda stop: run_lib.prepare(config, rundir, timings, stop, beside_import=True))
    # What the import added beyond the corpus pass it overlapped.
    since_start = run_lib.seconds_since_process_start()
    if since_start is not None:
      timings["startup"] = max(0.0, since_start - timings["vocabulary"] -
                               timings["encoding"])
    from tf_embeddings.word2vec import train as train_lib
    return train_lib.train_prepared(config, rundir, distribute.default(), prepared, timings)


def _eval(config):
  from tf_embeddings.word2vec import evaluate as evaluate_lib  # pylint: disable=import-outside-toplevel
  from tf_embeddings.word2vec import inputs  # pylint: disable=import-outside-toplevel
  from tf_embeddings.word2vec import model as model_lib  # pylint: disable=import-outside-toplevel
  saved, vocab, model = model_lib.restore(config.model_dir)
  heldout = inputs.saved_heldout_ids(config.model_dir, saved.eval_fraction)
  saved = dataclasses.replace(saved, words=config.words or saved.words)
  evaluator = evaluate_lib.Evaluator(saved, vocab, heldout)
  figures = evaluator.run(model)
  evaluator.log(figures)
  config_lib.run_dir(config.model_dir).save_eval(figures)
  print(json.dumps(figures, indent=2, sort_keys=True))


def _export(config, fmt, output, overwrite):
  from tf_embeddings.word2vec import export as export_lib  # pylint: disable=import-outside-toplevel
  export_lib.export(config.model_dir, fmt, output, overwrite)


def _vocab(config, output, overwrite):
  if not output:
    raise UserError("vocab needs --output=<vocab.tsv to write>")
  atomic.check_output(output, overwrite, directory=False)
  corpus = corpus_lib.resolve_corpus(config.corpus or None, tokenizer=config.tokenizer)
  vocab = Vocabulary.build(corpus.iter_token_chunks(), min_count=config.min_count,
                           max_size=config.max_vocab_size or None)
  atomic.replace_output(output, vocab.save, directory=False, overwrite=overwrite)
  logging.info("wrote %d words (UNK included, %d tokens) to %s", len(vocab),
               vocab.total_count, output)


def main(argv):
  if len(argv) != 2 or argv[1] not in word2vec_flags.ACTIONS:
    got = " ".join(argv[1:]) or "nothing"
    raise UserError(f"expected one action, got {got!r}: {USAGE}")
  action = argv[1]
  if action == "server":
    from tf_embeddings.training import distribute  # pylint: disable=import-outside-toplevel
    distribute.serve()
    return
  config = word2vec_flags.to_config(FLAGS)
  if action not in ("vocab", "train"):
    app_lib.import_tensorflow()
  if action == "train":
    _train(config)
  elif action == "eval":
    _eval(config)
  elif action == "export":
    _export(config, FLAGS.format, FLAGS.output, FLAGS.overwrite)
  else:
    _vocab(config, FLAGS.output, FLAGS.overwrite)


HELP = """usage: word2vec ACTION [--flags]

actions:
  train   learn embeddings from --corpus in --model_dir (run it again to resume)
  eval    evaluate the run in --model_dir, write its eval.json
  export  write the run's embeddings: --format=word2vec|word2vec_binary|projector|npy
          --output=PATH
  vocab   write the vocabulary of --corpus to --output
"""


def run():
  word2vec_flags.define_flags()
  app_lib.run(main, usage=HELP, flag_module=word2vec_flags.__name__)
