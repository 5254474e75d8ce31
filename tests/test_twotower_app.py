"""The `twotower` command line: train -> eval -> export end to end, and bad input."""
import json
import os

import pytest

from launcher import Launchers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


LAUNCHERS = Launchers(dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


@pytest.fixture(scope="module", autouse=True)
def _close_launchers():
  yield
  LAUNCHERS.close()


def twotower(*args):
  """`python -m tf_embeddings.twotower ARGS` in a child of a launcher that imported
  TensorFlow once (tests/launcher.py)."""
  return LAUNCHERS.run("twotower", args, ROOT)


def _no_traceback(res):
  assert "Traceback" not in res.stderr, res.stderr


def test_train_eval_export_end_to_end(tmp_path):
  run = str(tmp_path / "tt")
  res = twotower("train", "--dataset=synthetic", f"--model_dir={run}", "--epochs=1",
                 "--batch_size=256", "--embedding_dim=8", "--tower_layers=16")
  assert res.returncode == 0, res.stderr
  assert "trained" in res.stdout and "hit@100" in res.stdout
  assert "examples/s" in res.stderr  # the progress line
  with open(os.path.join(run, "config.json")) as f:
    config = json.load(f)
  assert config["model"]["embedding_dim"] == 8 and config["train"]["loss"] == "inbatch_softmax"
  res = twotower("eval", f"--model_dir={run}")
  assert res.returncode == 0, res.stderr
  assert "test (seen excluded): hit@1 " in res.stdout
  with open(os.path.join(run, "eval.json")) as f:
    ev = json.load(f)
  for k in ("hit@1", "hit@5", "hit@10", "hit@50", "hit@100", "recall@10", "ndcg@10", "mrr",
            "cross_entropy"):
    assert k in ev["seen_excluded"] and k in ev["seen_included"]
  # Excluding seen items can only move test items up.
  assert ev["seen_excluded"]["hit@10"] >= ev["seen_included"]["hit@10"]
  assert "users" not in ev
  # --eval_users: a seeded sample of the split's users (the synthetic test split has ~500).
  res = twotower("eval", f"--model_dir={run}", "--eval_users=20")
  assert res.returncode == 0, res.stderr
  assert "test: a sample of 20 of " in res.stdout
  with open(os.path.join(run, "eval.json")) as f:
    assert json.load(f)["users"]["evaluated"] == 20
  out = str(tmp_path / "export")
  res = twotower("export", f"--model_dir={run}", f"--output={out}", "--top_k=5")
  assert res.returncode == 0, res.stderr
  assert sorted(os.listdir(out)) == ["item_embeddings.npy", "metadata.tsv", "query_model"]


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset=netflix", "--model_dir=x"], "--dataset"),
    (["train", "--dataset=synthetic", "--temperature=0", "--model_dir=x"],
     "--temperature must be > 0"),
    (["train", "--dataset=csv", "--model_dir=x"], "--dataset=csv needs --data_path"),
    (["train", "--dataset=synthetic", "--loss=bce", "--mixed_negatives=8", "--model_dir=x"],
     "--mixed_negatives needs --loss=inbatch_softmax"),
    (["train", "--dataset=synthetic", "--optimizer=sgd", "--weight_decay=0.1",
      "--model_dir=x"], "--weight_decay needs --optimizer=adam"),
    (["train", "--dataset=synthetic", "--average_momentum=1", "--model_dir=x"],
     "--average_momentum"),
    (["train", "--dataset=synthetic", "--id_dropout=0.3", "--nouser_oov", "--model_dir=x"],
     "--id_dropout needs --user_oov"),
    (["train", "--dataset=synthetic", "--eval_users=-1", "--model_dir=x"], "--eval_users"),
    (["train", "--dataset=synthetic", "--use_history", "--jit_compile", "--model_dir=x"],
     "--use_history does not run under --jit_compile"),
    (["fly", "--model_dir=x"], "error: expected one action, got fly"),
    (["train"], "error: --model_dir is required"),
])
def test_flag_mistakes_end_in_one_line(args, message):
  res = twotower(*args)
  assert res.returncode != 0
  assert message in res.stderr
  _no_traceback(res)


def test_data_mistakes_end_in_one_error_line(tmp_path):
  csv = tmp_path / "x.csv"
  csv.write_text("user,item\n1,2\n")
  res = twotower("train", "--dataset=csv", f"--data_path={csv}",
                 f"--model_dir={tmp_path / 'a'}")
  assert res.returncode == 2
  assert "error: " in res.stderr and "no column 'user_id'" in res.stderr
  _no_traceback(res)
  res = twotower("eval", f"--model_dir={tmp_path / 'nothing'}")
  assert res.returncode == 2 and "holds no two-tower run" in res.stderr
  _no_traceback(res)
