"""Flags of the `word2vec` app, their validators, and flags -> Config."""
from absl import flags

from tf_embeddings.data.tokenizer import TOKENIZERS
from tf_embeddings.flags import cluster_flags
from tf_embeddings.word2vec import config as config_lib
from tf_embeddings.word2vec.config import LOSSES, MODELS, ROW_UPDATES, SAMPLERS, Config

ACTIONS = ("train", "eval", "export", "vocab", "server")
# The strategies word2vec implements (training/distribute.py).
STRATEGIES = ("default", "parameter_server")
EXPORT_FORMATS = ("word2vec", "word2vec_binary", "projector", "npy")


def _by(defaults):
  """'8 for nce, 16 for sampled_softmax': a default of config.py's, for the help text."""
  return ", ".join(f"{str(v).lower()} for {k}" for k, v in defaults.items())


def define_flags():
  """Defines every flag of the app (call once, before app.run)."""
  f = flags
  cluster_flags.define_cluster_flags()
  # Data.
  f.DEFINE_string("corpus", "", "Text to train on: a file (.txt or .gz), several files "
                  "separated by commas, a directory (every file under it), or 'text8' "
                  "(downloaded once and cached). Empty: the bundled State of the Union corpus.")
  f.DEFINE_enum("tokenizer", "text8", TOKENIZERS, "text8: lowercase, letters a-z only; "
                "whitespace: split on whitespace, keep everything.")
  f.DEFINE_integer("min_count", 5, "Drop words seen fewer times (they count as UNK).",
                   lower_bound=1)
  f.DEFINE_integer("max_vocab_size", 0, "Keep at most this many ids, UNK included "
                   "(0 = no limit).", lower_bound=0)
  f.register_validator("max_vocab_size", lambda v: v == 0 or v >= 2,
                       message="--max_vocab_size must be 0 (no limit) or at least 2 (UNK "
                       "and one word)")
  f.DEFINE_string("output", "", "vocab: the vocab.tsv to write; export: the file (word2vec "
                  "formats) or directory (projector, npy) to write.")
  f.DEFINE_bool("overwrite", False, "export, vocab: replace an existing --output (as a "
                "whole: the new one is built beside it and renamed over it).")
  # Model and loss.
  f.DEFINE_enum("model", "skipgram", MODELS, "skipgram: centre predicts each context word; "
                "cbow: mean of the context predicts the centre.")
  f.DEFINE_enum("loss", None, LOSSES, "nce: sigmoid cross-entropy over the target and the "
                "negatives (tf.nn.nce_loss); sampled_softmax: softmax over them "
                "(tf.nn.sampled_softmax_loss). Default: "
                f"{_by(config_lib.DEFAULT_LOSS)}.")
  f.DEFINE_enum("sampler", "unigram", SAMPLERS, "Candidate sampler for the negatives: "
                "unigram (counts^--distortion, word2vec's), log_uniform (Zipfian over the "
                "frequency-sorted ids), uniform, learned_unigram.")
  f.DEFINE_float("distortion", 0.75, "Exponent of the unigram sampler.", lower_bound=0.0)
  f.DEFINE_integer("num_sampled", None, "Negatives drawn for each group of --group_size "
                   "examples. Default: "
                   f"{_by(config_lib.DEFAULT_NUM_SAMPLED)}.", lower_bound=1)
  f.DEFINE_integer("group_size", None, "Examples sharing one draw of negatives: skip-gram "
                   "pairs of different centres at the same offset, CBOW centres (1 = fresh "
                   "negatives per example as word2vec.c; larger is faster). Must divide "
                   "--batch_size; above it, it is --batch_size (config.json records the "
                   f"value used). Default: {_by(config_lib.DEFAULT_GROUP_SIZE)}.",
                   lower_bound=1)
  f.DEFINE_bool("subtract_log_q", None, "Subtract log(expected count) from the logits "
                "(textbook NCE / sampled softmax, as tf.nn does). Default: "
                f"{_by(config_lib.DEFAULT_SUBTRACT_LOG_Q)} (false is Mikolov's negative "
                "sampling).")
  f.DEFINE_bool("remove_accidental_hits", True, "Ignore a negative equal to the target.")
  f.DEFINE_bool("train_biases", None, "Learn output biases. Default: "
                f"{_by(config_lib.DEFAULT_TRAIN_BIASES)}.")
  f.DEFINE_enum("row_update", "bounded", ROW_UPDATES, "How a table row that n "
                "examples of one SGD step update moves: bounded = by the sum of their "
                "updates, scaled down to 1 / (learning_rate * n) of it when "
                "learning_rate * n > 1 (a row's step no longer grows with how often its "
                "word repeats in a minibatch); sum = by their plain sum (word2vec.c's "
                "per-example rule applied at once; diverges with big batches or rates).")
  f.DEFINE_integer("embedding_dim", 100, "Embedding dimension.", lower_bound=1)
  f.DEFINE_integer("window", 5, "Maximum window; each centre uses a window drawn uniformly "
                   "in 1..window.", lower_bound=1)
  f.DEFINE_float("subsample", 1e-3, "Subsampling threshold of frequent words (0 = off).",
                 lower_bound=0.0)
  # Optimisation.
  f.DEFINE_integer("epochs", 3, "Passes over the training text.", lower_bound=1)
  f.DEFINE_integer("batch_size", None, "Centre words per SGD step (skip-gram trains every "
                   "pair of their windows, CBOW each centre from its context). Default: "
                   f"{_by(config_lib.DEFAULT_BATCH_SIZE)}.", lower_bound=1)
  f.DEFINE_integer("steps_per_call", None, "SGD steps per compiled call (for skip-gram also "
                   "the span of one reduced window). Default: "
                   f"{_by(config_lib.DEFAULT_STEPS_PER_CALL)}.", lower_bound=1)
  f.DEFINE_float("learning_rate", 0.0, "Initial learning rate, decayed linearly to "
                 "--min_learning_rate_ratio of it (0 = the default: "
                 f"{_by(config_lib.DEFAULT_LEARNING_RATE)}).",
                 lower_bound=0.0)
  f.DEFINE_float("min_learning_rate_ratio", 1e-4, "Floor of the linear decay.",
                 lower_bound=0.0, upper_bound=1.0)
  f.DEFINE_integer("seed", 1, "Seed of initialisation, subsampling, windows and sampling.")
  f.DEFINE_integer("chunk_tokens", 1 << 20, "Tokens per example-generation chunk (the "
                   "shuffle buffer and checkpoint granularity).", lower_bound=1000)
  # Run directory, eval, checkpoints.
  f.DEFINE_string("model_dir", "runs/word2vec", "Run directory: vocab, checkpoints, "
                  "TensorBoard summaries, config.json, eval.json.")
  f.DEFINE_bool("resume", True, "Continue the run in --model_dir from its last checkpoint; "
                "false starts over.")
  f.DEFINE_float("eval_fraction", 0.01, "Last fraction of the corpus held out for the "
                 "full-softmax eval.", lower_bound=0.0, upper_bound=0.5)
  f.DEFINE_integer("eval_examples", 4096, "Held-out examples scored against the whole "
                   "vocabulary (at most 2^28 / vocabulary size of them: 256 for 1M words).",
                   lower_bound=0)
  f.DEFINE_integer("eval_every_epochs", 0, "Evaluate after every N epochs during training "
                   "(0 = not during training: an evaluation costs about as much as a quarter "
                   "of an epoch of a few-million-token corpus); the run is always evaluated "
                   "after its last epoch.", lower_bound=0)
  f.DEFINE_float("checkpoint_every_secs", 600.0, "Checkpoint at the first chunk boundary "
                 "(or end of epoch) after this many seconds since the last checkpoint, and "
                 "after the last epoch.", lower_bound=0.0)
  f.DEFINE_integer("checkpoint_every_steps", 0, "Also checkpoint at the first chunk "
                   "boundary after this many steps (0 = by time only).", lower_bound=0)
  f.DEFINE_float("summary_every_secs", 5.0, "Progress line and TensorBoard scalars period.",
                 lower_bound=0.0)
  f.DEFINE_list("words", ["president", "war", "money", "america"], "Words whose nearest "
                "neighbours eval prints.")
  f.DEFINE_integer("analogy_restrict", 30000, "Analogies use the N most frequent words, "
                   "as word2vec's compute-accuracy.", lower_bound=1)
  f.DEFINE_integer("projector_words", 10000, "Most frequent words written for the "
                   "TensorBoard projector.", lower_bound=1)
  f.DEFINE_enum("format", "word2vec", EXPORT_FORMATS, "export format: word2vec (text), "
                "word2vec_binary, projector (vectors.tsv + metadata.tsv), npy "
                "(vectors.npy + vocab.txt).")



def to_config(f=flags.FLAGS):
  """The frozen Config of the parsed flags; a flag left unset (None, or --learning_rate=0)
  takes the default config.resolve decides.

  Raises:
    UserError: flags that contradict each other (--group_size not dividing --batch_size).
  """
  config = Config(
      model_dir=f.model_dir, corpus=f.corpus, tokenizer=f.tokenizer, min_count=f.min_count,
      max_vocab_size=f.max_vocab_size, model=f.model, loss=f.loss, sampler=f.sampler,
      distortion=f.distortion, num_sampled=f.num_sampled, group_size=f.group_size,
      subtract_log_q=f.subtract_log_q, remove_accidental_hits=f.remove_accidental_hits,
      train_biases=f.train_biases, row_update=f.row_update, embedding_dim=f.embedding_dim,
      window=f.window,
      subsample=f.subsample, epochs=f.epochs, batch_size=f.batch_size,
      steps_per_call=f.steps_per_call, learning_rate=f.learning_rate,
      min_learning_rate_ratio=f.min_learning_rate_ratio, seed=f.seed,
      eval_fraction=f.eval_fraction, eval_examples=f.eval_examples,
      eval_every_epochs=f.eval_every_epochs, summary_every_secs=f.summary_every_secs,
      checkpoint_every_steps=f.checkpoint_every_steps,
      checkpoint_every_secs=f.checkpoint_every_secs, resume=f.resume,
      chunk_tokens=f.chunk_tokens, words=tuple(f.words or ()),
      analogy_restrict=f.analogy_restrict, projector_words=f.projector_words)
  config.check_batch_size()
  config.check_group_size()
  return config
