"""Evaluation of a word2vec run: full softmax / sigmoid on held-out text, analogies, similarity.

The held-out loss is the "eval mode" of the sampled losses: the same weights scored against
the whole vocabulary (`losses.full_softmax_loss` for sampled-softmax runs,
`losses.full_sigmoid_loss` summed over the vocabulary for NCE runs), chunked over classes so a
1M-word vocabulary fits in memory.
"""
import json
import math
import os

import numpy as np
import tensorflow as tf
from absl import logging

import losses
from data import embedding_formats
from data import evalsets
from data import pipeline
from data.atomic import atomic_write
from data.errors import UserError
from word2vec import intrinsic

SIMILARITY_SETS = ("wordsim353", "simlex999")


class Evaluator:
  """Holds the fixed held-out examples and eval sets of a run."""

  def __init__(self, config, vocab, heldout_ids, chunk_size=16384):
    self.config = config
    self.vocab = vocab
    self.chunk_size = chunk_size
    self.examples = self._heldout_examples(heldout_ids)
    self.analogies = evalsets.load_analogies()
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
    take = rng.permutation(targets.shape[0])[:c.eval_examples]
    return inputs[take], lengths[take], targets[take]

  def heldout_loss(self, model):
    """Mean full-vocabulary loss of the held-out examples (None without held-out text)."""
    if self.examples is None:
      return None
    inputs, lengths, targets = self.examples
    total, n = 0.0, targets.shape[0]
    for s in range(0, n, 1024):
      hidden = model.hidden(tf.constant(inputs[s:s + 1024]), tf.constant(lengths[s:s + 1024]))
      args = (model.output_embeddings, model.output_biases,
              tf.constant(targets[s:s + 1024]), hidden)
      if self.config.loss == "nce":
        batch_loss = losses.full_sigmoid_loss(*args, chunk_size=self.chunk_size)
      else:
        batch_loss = losses.full_softmax_loss(*args, chunk_size=self.chunk_size)
      total += float(batch_loss) * hidden.shape[0]
    return total / n

  def run(self, model):
    """All figures as a dict (json-able)."""
    vectors = model.input_embeddings.numpy()
    figures = {"vocab_size": len(self.vocab)}
    loss = self.heldout_loss(model)
    if loss is not None:
      name = "heldout_full_sigmoid_loss" if self.config.loss == "nce" else \
          "heldout_full_softmax_loss"
      figures[name] = loss
      figures["heldout_examples"] = int(self.examples[2].shape[0])
    analogy = intrinsic.analogy_accuracy(vectors, self.vocab.words, self.analogies,
                                         restrict_vocab=self.config.analogy_restrict)
    figures["analogy_accuracy"] = analogy["accuracy"]
    figures["analogy_seen"] = analogy["seen"]
    figures["analogy_questions"] = analogy["questions"]
    figures["analogy_sections"] = {k: v["accuracy"] for k, v in analogy["sections"].items()}
    for name, pairs in self.similarity.items():
      rho, oov = intrinsic.similarity_spearman(vectors, self.vocab.index, pairs)
      figures[f"{name}_spearman"] = None if math.isnan(rho) else rho
      figures[f"{name}_oov"] = oov
    neighbours = {}
    for word in self.config.words:
      try:
        neighbours[word] = [(w, round(float(s), 4)) for w, s in
                            intrinsic.nearest_neighbours(vectors, self.vocab.words, word, k=8)]
      except ValueError:
        neighbours[word] = "not in vocabulary"
    if neighbours:
      figures["nearest_neighbours"] = neighbours
    return figures

  def log(self, figures):
    for name, value in scalars(figures).items():
      logging.info("eval/%s = %.4f", name, value)
    for word, nn in figures.get("nearest_neighbours", {}).items():
      if isinstance(nn, str):
        logging.info("neighbours of %r: %s", word, nn)
      else:
        logging.info("neighbours of %r: %s", word, ", ".join(f"{w} {s:.3f}" for w, s in nn))


def scalars(figures):
  """The numeric top-level figures (for TensorBoard and logs)."""
  return {k: float(v) for k, v in figures.items()
          if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None}


def save_eval_json(model_dir, figures):
  with atomic_write(os.path.join(model_dir, "eval.json")) as f:
    json.dump(figures, f, indent=2, sort_keys=True)
    f.write("\n")


def write_projector(config, vocab, vectors):
  """Vectors + words of the most frequent words for TensorBoard's Projector tab."""
  n = min(len(vocab), config.projector_words + 1)
  directory = os.path.join(config.model_dir, "train")
  embedding_formats.save_projector(directory, vocab.words[1:n], vectors[1:n],
                                   counts=vocab.counts[1:n])
