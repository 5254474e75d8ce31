"""word2vec/config.py: `resolve` decides every default once, a recorded run's config.json
resolves to the values it trained with, and the flags' defaults are the Config's."""
import dataclasses
import json
import os
import subprocess
import sys

import pytest

from tf_embeddings.training import rundir as rundir_lib
from tf_embeddings.word2vec import config as config_lib
from tf_embeddings.word2vec.config import Config

# The documented defaults (README "word2vec", `word2vec --helpfull`), written out.
SKIPGRAM = dict(loss="nce", num_sampled=8, subtract_log_q=False, train_biases=False,
                learning_rate=0.025, batch_size=256, steps_per_call=64, group_size=64)
CBOW = dict(loss="sampled_softmax", num_sampled=16, subtract_log_q=True, train_biases=True,
            learning_rate=0.05, batch_size=4096, steps_per_call=16, group_size=128)


def _fields(config, names):
  return {k: getattr(config, k) for k in names}


@pytest.mark.parametrize("model, want", [("skipgram", SKIPGRAM), ("cbow", CBOW)])
def test_every_default_is_decided_when_a_config_is_built(model, want):
  config = Config(model_dir="u", model=model)
  assert _fields(config, want) == want
  assert None not in dataclasses.asdict(config).values()
  assert config_lib.resolve(config) == {}  # a resolved config resolves to itself
  assert config.lr == want["learning_rate"]


def test_defaults_follow_the_loss_and_given_settings_stay():
  config = Config(model_dir="u", model="cbow", loss="nce")
  assert _fields(config, ("num_sampled", "subtract_log_q", "train_biases")) == \
      dict(num_sampled=8, subtract_log_q=False, train_biases=False)
  given = dict(loss="sampled_softmax", num_sampled=3, subtract_log_q=False,
               train_biases=False, learning_rate=0.01, batch_size=32, steps_per_call=3,
               group_size=16)
  assert _fields(Config(model_dir="u", **given), given) == given
  # 0 is "the default" as None is (config.json recorded --learning_rate=0 so).
  zeros = Config(model_dir="u", num_sampled=0, learning_rate=0.0, batch_size=0,
                 steps_per_call=0)
  assert zeros == Config(model_dir="u")
  assert Config(model_dir="u", batch_size=32).group_size == 32  # at most one minibatch


def test_an_old_config_json_resolves_to_what_the_run_trained_with():
  # Recorded before resolve decided the learning rate: learning_rate 0 and the rate used
  # in resolved_learning_rate; the loss-dependent settings as the flags decided them.
  new = Config(model_dir="u", model="cbow")
  old = dict(rundir_lib.config_to_dict(new), learning_rate=0.0, resolved_learning_rate=0.05)
  loaded = rundir_lib.config_from_dict(Config, old)
  assert loaded == new and loaded.learning_rate == 0.05
  run = rundir_lib.RunDir("u", Config)
  assert run.differences(loaded, new) == []
  assert run.differences(loaded, dataclasses.replace(new, learning_rate=0.1)) == \
      [("learning_rate", 0.05, 0.1)]


FLAG_DEFAULTS = """
import json
from absl import flags
from tf_embeddings.flags import word2vec_flags
word2vec_flags.define_flags()
print(json.dumps({name: flags.FLAGS[name].default for name in flags.FLAGS}))
"""


def test_flag_defaults_are_the_configs():
  # Written twice (absl flag, dataclass field): they must agree, or a library Config and
  # `word2vec train` would train different runs. --words is the app's alone (the library
  # shows no neighbours unless asked); --learning_rate=0 means "resolve's default".
  res = subprocess.run([sys.executable, "-c", FLAG_DEFAULTS], capture_output=True, text=True,
                       timeout=120, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
  flag_defaults = json.loads(res.stdout.strip().splitlines()[-1])
  fields = {f.name: f.default for f in dataclasses.fields(Config)
            if f.default is not dataclasses.MISSING}
  shared = sorted(set(fields) & set(flag_defaults) - {"words"})
  assert len(shared) == len(fields) - 1, set(fields) - set(flag_defaults)
  assert {k: flag_defaults[k] for k in shared} == \
      {k: 0.0 if k == "learning_rate" else fields[k] for k in shared}
  assert Config(model_dir="u", learning_rate=0.0) == Config(model_dir="u")
