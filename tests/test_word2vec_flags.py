"""Flag parsing of the word2vec app: the loss- and model-dependent defaults resolve as
documented."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = """
import json, sys
from absl import flags
from tf_embeddings.flags import word2vec_flags
word2vec_flags.define_flags()
for argv in json.loads(sys.argv[1]):
  flags.FLAGS.unparse_flags()
  flags.FLAGS(["word2vec"] + argv)
  c = word2vec_flags.to_config()
  print(json.dumps({k: getattr(c, k) for k in ("loss", "num_sampled", "subtract_log_q",
                                                "train_biases", "lr", "batch_size",
                                                "steps_per_call")}))
"""
CASES = [
    ((), dict(loss="nce", num_sampled=8, subtract_log_q=False, train_biases=False,
              lr=0.025, batch_size=256, steps_per_call=64)),
    (("--model=cbow",), dict(loss="sampled_softmax", num_sampled=16, subtract_log_q=True,
                             train_biases=True, lr=0.05, batch_size=4096,
                             steps_per_call=16)),
    (("--model=cbow", "--loss=nce"), dict(loss="nce", num_sampled=8, subtract_log_q=False,
                                          train_biases=False, lr=0.05, batch_size=4096,
                                          steps_per_call=16)),
    (("--loss=sampled_softmax", "--num_sampled=3", "--nosubtract_log_q",
      "--learning_rate=0.01", "--batch_size=64", "--steps_per_call=3"),
     dict(loss="sampled_softmax", num_sampled=3, subtract_log_q=False, train_biases=True,
          lr=0.01, batch_size=64, steps_per_call=3)),
]


def test_loss_dependent_defaults():
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  argvs = [list(argv) for argv, _ in CASES]
  res = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(argvs)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300, check=True)
  got = [json.loads(line) for line in res.stdout.strip().splitlines()]
  assert got == [want for _, want in CASES]
