"""Default word2vec settings never diverge, even on a degenerate corpus.

Three words repeated a million times: every minibatch holds each word hundreds of times
as centre, context, target and negative, which is what made the summed per-example
update diverge (issue: CBOW's defaults diverged on an ordinary 8M-token corpus). With the
bounded row update (the default) both models train to the end with finite figures; with
the plain sum, skip-gram's loss becomes NaN (so the test can fail).
"""
import math
import os

import numpy as np
import pytest

from tf_embeddings.data.errors import UserError
from tf_embeddings.word2vec import config as config_lib
from tf_embeddings.word2vec import train as train_lib


@pytest.fixture(scope="module")
def three_words(tmp_path_factory):
  path = tmp_path_factory.mktemp("three") / "three.txt"
  rng = np.random.default_rng(0)
  words = np.array(["alpha", "beta", "gamma"])
  with open(path, "w") as f:
    for _ in range(10_000):          # 1M tokens, 100 a line
      f.write(" ".join(words[rng.integers(0, 3, 100)]) + "\n")
  return str(path)


def run(corpus, model_dir, **overrides):
  # 3 words besides UNK: 2 negatives per draw (the default 8 / 16 are more than the
  # vocabulary); everything else is the app's default.
  kw = dict(model_dir=str(model_dir), corpus=corpus, num_sampled=2, epochs=1,
            steps_per_call=4, summary_every_secs=0, eval_examples=256, projector_words=3)
  kw.update(overrides)
  return train_lib.train(config_lib.Config(**kw))


@pytest.mark.parametrize("model", ["skipgram", "cbow"])
def test_three_words_repeated_train_to_the_end(three_words, tmp_path, model):
  figures = run(three_words, tmp_path / model, model=model)
  loss = [v for k, v in figures.items() if k.startswith("heldout_full_")]
  assert len(loss) == 1 and math.isfinite(loss[0])
  # A softmax over 3 words (and UNK) cannot be worse than uniform by much: no blow-up.
  assert loss[0] < 10.0
  assert os.path.exists(tmp_path / model / "eval.json")


def test_the_plain_sum_diverges_there(three_words, tmp_path):
  with pytest.raises(UserError, match="became nan"):
    run(three_words, tmp_path / "sum", model="skipgram", row_update="sum")
