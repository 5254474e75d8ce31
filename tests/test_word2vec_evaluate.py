"""word2vec/evaluate.py: the held-out full-vocabulary loss against a numpy reference, its
cost cap, and the evaluation cadence of training."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tf_embeddings.data.vocab import Vocabulary
from tf_embeddings.word2vec import evaluate
from tf_embeddings.word2vec import model as model_lib
from tf_embeddings.word2vec import train as train_lib
from tf_embeddings.word2vec.config import Config


def _model_and_evaluator(model, loss, vocab_size=50, dim=8, scale=1.0, seed=0):
  rng = np.random.default_rng(seed)
  words = ["<unk>"] + [f"w{i}" for i in range(vocab_size - 1)]
  vocab = Vocabulary(words, [1] + list(range(vocab_size + 10, 11, -1)))
  config = Config(model_dir="unused", model=model, loss=loss, embedding_dim=dim,
                  batch_size=64, window=2, eval_examples=300, num_sampled=4,
                  train_biases=True)
  m = model_lib.build_model(config, vocab)
  m.input_embeddings.assign(scale * rng.normal(size=(vocab_size, dim)).astype(np.float32))
  m.output_embeddings.assign(scale * rng.normal(size=(vocab_size, dim)).astype(np.float32))
  m.output_biases.assign(rng.normal(size=vocab_size).astype(np.float32))
  heldout = rng.integers(1, vocab_size, size=400).astype(np.int32)
  return m, evaluate.Evaluator(config, vocab, heldout)


def _reference(m, ev, loss, examples=None):
  """Dense numpy (float64) full softmax / full sigmoid loss of the held-out examples (the
  first `examples` of them)."""
  inputs, lengths, targets = (x[:examples] for x in ev.examples)
  hidden = m.hidden(tf.constant(inputs), tf.constant(lengths)).numpy().astype(np.float64)
  w = m.output_embeddings.numpy().astype(np.float64)
  b = m.output_biases.numpy().astype(np.float64)
  logits = hidden @ w.T + b  # [n, V]
  true = logits[np.arange(len(targets)), targets]
  if loss == "nce":
    softplus = np.logaddexp(0.0, logits)
    return float(np.mean(softplus.sum(axis=1) - true))
  top = logits.max(axis=1)
  lse = top + np.log(np.exp(logits - top[:, None]).sum(axis=1))
  return float(np.mean(lse - true))


@pytest.mark.parametrize("model, loss", [("skipgram", "nce"), ("cbow", "sampled_softmax"),
                                         ("cbow", "nce")])
@pytest.mark.parametrize("scale", [1.0, 30.0])  # 30: logits of +-1000s, exp overflows
def test_heldout_loss_matches_numpy_in_chunks(monkeypatch, model, loss, scale):
  m, ev = _model_and_evaluator(model, loss, scale=scale)
  assert ev.examples[2].shape[0] == 300
  monkeypatch.setattr(evaluate, "CHUNK_LOGITS", 300 * 7)  # chunks of 7 classes, last 1
  want = _reference(m, ev, loss)
  got = ev.heldout_loss(m)
  assert np.isfinite(got)
  assert got == pytest.approx(want, rel=2e-5)


@pytest.mark.parametrize("model, loss", [("skipgram", "nce"), ("cbow", "sampled_softmax")])
def test_sampled_evaluation_scores_the_first_examples_with_the_same_graph(monkeypatch, model,
                                                                           loss):
  # Evaluations during training: the held-out loss of the first SAMPLE_HELDOUT examples
  # (a random sample: the examples are in random order), by the graph the whole evaluation
  # uses (traced once for both sizes).
  m, ev = _model_and_evaluator(model, loss)
  monkeypatch.setattr(evaluate, "SAMPLE_HELDOUT", 100)
  sampled = ev.run(m, sampled=True)
  key = "heldout_full_sigmoid_loss" if loss == "nce" else "heldout_full_softmax_loss"
  assert sampled["heldout_examples"] == 100
  assert sampled[key] == pytest.approx(_reference(m, ev, loss, 100), rel=2e-5)
  whole = ev.run(m)
  assert whole["heldout_examples"] == 300
  assert whole[key] == pytest.approx(_reference(m, ev, loss), rel=2e-5)
  assert ev._loss_function(m).experimental_get_tracing_count() == 1  # pylint: disable=protected-access


def test_heldout_examples_are_capped_by_the_logit_budget(monkeypatch):
  config = Config(model_dir="unused", eval_examples=4096)
  assert evaluate.heldout_example_count(config, 65536) == 4096
  assert evaluate.heldout_example_count(config, 1_000_000) == 268
  assert evaluate.heldout_example_count(config, 1 << 40) == 1
  monkeypatch.setattr(evaluate, "MAX_HELDOUT_LOGITS", 50 * 100)
  _, ev = _model_and_evaluator("skipgram", "nce", vocab_size=50)
  assert ev.examples[2].shape[0] == 100


def test_evaluates_after():
  c = Config(model_dir="unused", epochs=5, eval_every_epochs=2)
  assert [e for e in range(5) if train_lib.evaluates_after(c, e)] == [1, 3, 4]
  c = dataclasses.replace(c, eval_every_epochs=0)
  assert [e for e in range(5) if train_lib.evaluates_after(c, e)] == [4]
  c = dataclasses.replace(c, eval_every_epochs=1)
  assert [e for e in range(5) if train_lib.evaluates_after(c, e)] == [0, 1, 2, 3, 4]


def test_group_size_is_clamped_to_the_batch_and_must_divide_it():
  assert Config(model_dir="u", batch_size=32, group_size=64).group_size == 32
  Config(model_dir="u", batch_size=64, group_size=16).check_group_size()
  from tf_embeddings.data.errors import UserError  # pylint: disable=import-outside-toplevel
  with pytest.raises(UserError, match="--group_size=48 must divide --batch_size=64"):
    Config(model_dir="u", batch_size=64, group_size=48).check_group_size()


def test_batch_size_is_capped_at_the_largest_measured_stable_one():
  from tf_embeddings.data.errors import UserError  # pylint: disable=import-outside-toplevel
  Config(model_dir="u", model="skipgram", batch_size=4096).check_batch_size()
  Config(model_dir="u", model="cbow", batch_size=16384).check_batch_size()
  with pytest.raises(UserError, match="--batch_size=8192 is above 4096"):
    Config(model_dir="u", model="skipgram", batch_size=8192).check_batch_size()
  with pytest.raises(UserError, match="--batch_size=32768 is above 16384"):
    Config(model_dir="u", model="cbow", batch_size=32768).check_batch_size()
