"""Evaluation of a word2vec run: full softmax / sigmoid on held-out text, analogies, similarity.

The held-out loss is the "eval mode" of the sampled losses: the same weights scored against
the whole vocabulary (`losses.full_softmax_loss` for sampled-softmax runs,
`losses.full_sigmoid_loss` summed over the vocabulary for NCE runs): one [examples, dim] x
[dim, vocab] product chunked over classes, so a 1M-word vocabulary fits in memory.

Cost, so that evaluating stays a small part of a run: the held-out loss scores at most
`MAX_HELDOUT_LOGITS` logits (--eval_examples examples, fewer for a vocabulary above 65k
words: 256 at 1M); the analogies read only the --analogy_restrict most frequent rows; the
similarity sets read only their words' rows; the nearest neighbours take one chunked pass over
the table for all --words. Nothing copies the whole embedding table.

Evaluations during training (--eval_every_epochs) are sampled: the held-out loss of the first
`SAMPLE_HELDOUT` held-out examples and the analogies of a fixed sample of `SAMPLE_QUESTIONS`
seen questions (the same examples and questions at every evaluation of a run), so that they
cost a few percent of an epoch (CBOW on 8M tokens: 0.86 s for the whole evaluation, about a
third of an epoch's training; sampled: see README "Evaluation"). The evaluation after the last
epoch scores everything.
"""
import math

import numpy as np
import tensorflow as tf
from absl import logging

from tf_embeddings import losses
from tf_embeddings.data import evalsets
from tf_embeddings.data import pipeline
from tf_embeddings.data.errors import UserError
from tf_embeddings.training.distribute import RowLayout
from tf_embeddings.training.distribute import gather_rows
from tf_embeddings.word2vec import intrinsic

SIMILARITY_SETS = ("wordsim353", "simlex999")
# Logits the held-out loss computes at most (examples x vocabulary size): --eval_examples=4096
# up to a 65,536-word vocabulary, 256 examples at 1M words (a few seconds at dim 300).
MAX_HELDOUT_LOGITS = 1 << 28
# Logits of one chunk of the held-out product: [examples, classes] float32 = 64 MB.
CHUNK_LOGITS = 1 << 24
# What a sampled evaluation (during training) scores: held-out examples, analogy questions.
SAMPLE_HELDOUT = 512
SAMPLE_QUESTIONS = 1024


class TableRows:
  """Rows of a [vocab, dim] tf.Variable (or ShardedVariable) read on demand, as numpy (no
  copy of the table).

  Supports `.shape`, `table[start:stop]` and `table[int array]`, what word2vec/intrinsic.py
  reads, indexed by id (`layout`: where each id's row is; default row = id).
  """

  def __init__(self, variable, layout=None):
    self.variable = variable
    self.layout = layout or RowLayout(variable.shape[0])
    self.shape = tuple(variable.shape)

  def __getitem__(self, key):
    if isinstance(key, slice):
      key = np.arange(*key.indices(self.shape[0]))
    rows = self.layout.rows_np(np.asarray(key, dtype=np.int64))
    return gather_rows(self.variable, tf.constant(rows)).numpy()


def tensorflow_best(unit):
  """intrinsic.analogy_accuracy's `best` on TensorFlow: the [questions, dim] x [dim, R]
  product, masking and argmax multithreaded (the whole analogy test on 2 cores, 12.7k
  questions over 30k words: 0.59 s against numpy's 0.82 s, medians of 5); the same answers
  (tested)."""
  table = tf.constant(unit)

  def best(query, rows, cols):
    scores = tf.matmul(query, table, transpose_b=True)
    scores = tf.tensor_scatter_nd_update(scores, np.stack([rows, cols], 1),
                                         tf.fill([rows.shape[0]], -np.inf))
    return tf.argmax(scores, axis=1).numpy()

  return best


def heldout_example_count(config, vocab_size):
  """Held-out examples scored: --eval_examples, capped at MAX_HELDOUT_LOGITS / vocab size."""
  return min(config.eval_examples, max(1, MAX_HELDOUT_LOGITS // max(vocab_size, 1)))


class Evaluator:
  """Holds the fixed held-out examples and eval sets of a run."""

  def __init__(self, config, vocab, heldout_ids):
    self.config = config
    self.vocab = vocab
    self.examples = self._heldout_examples(heldout_ids)
    self._full_loss = None  # (model, its held-out loss as a tf.function)
    self.analogies = evalsets.load_analogies()
    # The questions' rows, looked up once a run (0.1-0.2 s), all of them and the sample.
    every = intrinsic.Analogies(vocab.words, self.analogies,
                                restrict_vocab=config.analogy_restrict)
    self._questions = {False: every, True: every.sample(SAMPLE_QUESTIONS)}
    self.upper_index = intrinsic.case_insensitive_index(vocab.index)
    self.similarity = {}
    for name in SIMILARITY_SETS:
      try:
        self.similarity[name] = evalsets.load_similarity(name)
      except UserError as e:
        logging.warning("skipping %s: %s", name, e)

  def _heldout_examples(self, heldout_ids):
    c = self.config
    ids = np.asarray(heldout_ids)
    if ids.shape[0] < 2 or c.eval_examples <= 0:
      return None
    rng = np.random.default_rng([c.seed, 7919])
    kept = pipeline.subsample(ids, np.ones(len(self.vocab)), rng)  # drops UNK only
    if c.model == "skipgram":
      inputs, targets = pipeline.skipgram_pairs(kept, c.window, rng)
      lengths = np.zeros_like(targets)
    else:
      inputs, lengths, targets = pipeline.cbow_examples(kept, c.window, rng)
    if targets.shape[0] == 0:
      return None
    take = rng.permutation(targets.shape[0])[:heldout_example_count(c, len(self.vocab))]
    return inputs[take], lengths[take], targets[take]

  def heldout_loss(self, model, examples=None):
    """Mean full-vocabulary loss of the held-out examples, or of the first `examples` of
    them (None without held-out text)."""
    if self.examples is None:
      return None
    inputs, lengths, targets = (x[:examples] for x in self.examples)
    # Hidden vectors of all the examples: [n, dim]; scored in one product chunked over classes.
    hidden = model.hidden(tf.constant(inputs), tf.constant(lengths))
    return float(self._loss_function(model)(tf.constant(targets, tf.int64), hidden))

  def _loss_function(self, model):
    """The held-out loss of `model` as one graph (its chunk loop runs without an eager
    dispatch per op; 40k words, 4096 examples: 0.35 -> 0.23 s an evaluation), traced once a
    run for any number of examples (the sampled and the whole evaluation share it)."""
    if self._full_loss is None or self._full_loss[0] is not model:
      chunk_size = max(1, CHUNK_LOGITS // self.examples[2].shape[0])
      full_loss = losses.full_sigmoid_loss if self.config.loss == "nce" else \
          losses.full_softmax_loss

      def loss(targets, hidden):
        # The classes in row order: only the targets' rows matter to the loss.
        return full_loss(model.output_embeddings, model.output_biases,
                         model.layout.rows(targets), hidden, chunk_size=chunk_size)

      self._full_loss = (model, tf.function(
          loss, autograph=False, input_signature=[tf.TensorSpec([None], tf.int64),
                                                  tf.TensorSpec([None, None], tf.float32)]))
    return self._full_loss[1]

  def run(self, model, sampled=False):
    """All figures as a dict (json-able); `sampled`: the held-out loss and the analogies on
    their samples (SAMPLE_HELDOUT examples, SAMPLE_QUESTIONS questions; the figures
    "heldout_examples" and "analogy_seen" say how many were scored)."""
    vectors = TableRows(model.input_embeddings, model.layout)
    figures = {"vocab_size": len(self.vocab)}
    examples = SAMPLE_HELDOUT if sampled else None
    loss = self.heldout_loss(model, examples)
    if loss is not None:
      name = "heldout_full_sigmoid_loss" if self.config.loss == "nce" else \
          "heldout_full_softmax_loss"
      figures[name] = loss
      figures["heldout_examples"] = int(self.examples[2][:examples].shape[0])
    analogy = self._questions[sampled].accuracy(vectors, best=tensorflow_best)
    figures["analogy_accuracy"] = analogy["accuracy"]
    figures["analogy_seen"] = analogy["seen"]
    figures["analogy_questions"] = analogy["questions"]
    figures["analogy_sections"] = {k: v["accuracy"] for k, v in analogy["sections"].items()}
    for name, pairs in self.similarity.items():
      rho, oov = intrinsic.similarity_spearman(vectors, self.vocab.index, pairs,
                                               upper_index=self.upper_index)
      figures[f"{name}_spearman"] = None if math.isnan(rho) else rho
      figures[f"{name}_oov"] = oov
    neighbours = {word: "not in vocabulary" for word in self.config.words}
    known = [word for word in self.config.words if word in self.vocab.index]
    found = intrinsic.nearest_neighbours_many(vectors, self.vocab.words,
                                              [self.vocab.index[w] for w in known], k=8)
    for word, nn in zip(known, found):
      neighbours[word] = [(w, round(float(s), 4)) for w, s in nn]
    if neighbours:
      figures["nearest_neighbours"] = neighbours
    return figures

  def log(self, figures, prefix="eval"):
    for name, value in scalars(figures).items():
      logging.info("%s/%s = %.4f", prefix, name, value)
    for word, nn in figures.get("nearest_neighbours", {}).items():
      if isinstance(nn, str):
        logging.info("neighbours of %r: %s", word, nn)
      else:
        logging.info("neighbours of %r: %s", word, ", ".join(f"{w} {s:.3f}" for w, s in nn))


def scalars(figures):
  """The numeric top-level figures (for TensorBoard and logs)."""
  return {k: float(v) for k, v in figures.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}


def write_projector(rundir, config, vocab, vectors, layout=None):
  """Vectors + words of the most frequent words for TensorBoard's Projector tab.

  `rundir`: the run's `RunDir`; `vectors`: the [vocab, dim] table (array or tf.Variable);
  only the rows written are read; `layout`: where each id's row is (default row = id).
  """
  n = min(len(vocab), config.projector_words + 1)
  # A gather, not a slice: a variable that was updated sparsely copies itself whole on a
  # dense read (a 1M x 300 table: +1.3 GB peak RSS at the end of training).
  ids = tf.range(1, n)
  rows = gather_rows(vectors, layout.rows(ids) if layout else ids).numpy()
  rundir.write_projector(vocab.words[1:n], rows, counts=vocab.counts[1:n])
