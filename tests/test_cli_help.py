"""`word2vec --help` and `twotower --help`: the actions and the app's own flags, at once.

Each runs in a real process that reports, at exit, whether TensorFlow was imported (the
help must answer without it: importing TensorFlow takes seconds).
"""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROBE = """
import atexit, sys
atexit.register(lambda: sys.stderr.write("TF_IMPORTED=%s\\n" % ("tensorflow" in sys.modules)))
sys.argv = [{app!r}] + {args!r}
from tf_embeddings.{app} import __main__ as entry
entry.run()
"""
ACTIONS = {"word2vec": ("train", "eval", "export", "vocab"),
           "twotower": ("train", "eval", "export")}


def defined_flags(app):
  with open(os.path.join(ROOT, "flags", f"{app}_flags.py"), encoding="utf-8") as f:
    return re.findall(r"DEFINE_\w+\(\s*\"(\w+)\"", f.read())


@pytest.mark.parametrize("app", ["word2vec", "twotower"])
@pytest.mark.parametrize("arg", ["--help", "-h"])
def test_help_lists_actions_and_flags_without_tensorflow(app, arg):
  res = subprocess.run([sys.executable, "-c", PROBE.format(app=app, args=[arg])], cwd=ROOT,
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ))
  assert res.returncode == 0, res.stderr
  assert "TF_IMPORTED=False" in res.stderr, res.stderr
  assert "Traceback" not in res.stderr
  assert res.stdout.startswith(f"usage: {app} ACTION")
  for action in ACTIONS[app]:
    assert re.search(rf"^  {action} ", res.stdout, re.M), action
  names = defined_flags(app)
  assert len(names) > 10
  for name in names:
    assert re.search(rf"^\s+--(\[no\])?{name}: \S", res.stdout, re.M), name
  # absl's own flags (--logtostderr, --verbosity...) are left to --helpfull.
  assert "--logtostderr" not in res.stdout


@pytest.mark.parametrize("env,expect", [
    ({}, "--tf_xla_persistent_cache_directory={cache}/xla"),
    ({"EMBEDDINGS_XLA_CACHE": "0"}, ""),
    ({"TF_XLA_FLAGS": "--tf_xla_persistent_cache_directory=/mine"},
     "--tf_xla_persistent_cache_directory=/mine"),
    ({"TF_XLA_FLAGS": "--tf_xla_auto_jit=2"},
     "--tf_xla_auto_jit=2 --tf_xla_persistent_cache_directory={cache}/xla"),
])
def test_word2vec_keeps_compiled_programs_in_the_cache(tmp_path, env, expect):
  # `python -m tf_embeddings.word2vec` sets TF_XLA_FLAGS before TensorFlow is imported,
  # unless the user named a cache directory or turned it off.
  probe = ("import os, sys; sys.argv = ['word2vec', '--help']\n"
           "import tf_embeddings.word2vec.__main__\n"
           "print('FLAGS=' + os.environ.get('TF_XLA_FLAGS', ''))\n")
  base = {k: v for k, v in os.environ.items()
          if k not in ("TF_XLA_FLAGS", "EMBEDDINGS_XLA_CACHE")}
  res = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                       text=True, timeout=120,
                       env=dict(base, EMBEDDINGS_CACHE=str(tmp_path), **env))
  assert res.returncode == 0, res.stderr
  assert f"FLAGS={expect.format(cache=tmp_path)}\n" in res.stdout, res.stdout


@pytest.mark.parametrize("app", ["word2vec", "twotower"])
def test_a_users_own_modules_do_not_shadow_ours(tmp_path, app):
  # `python -m` puts the working directory first on sys.path: a user's data.py, flags.py,
  # word2vec.py (...) there must not be imported in place of the package's.
  for name in ("data", "flags", "word2vec", "twotower", "training", "losses"):
    (tmp_path / f"{name}.py").write_text('raise SystemExit("shadowed")\n')
  res = subprocess.run([sys.executable, "-m", f"tf_embeddings.{app}", "--help"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env=dict(os.environ))
  assert res.returncode == 0, res.stderr
  assert "shadowed" not in res.stdout + res.stderr
  assert res.stdout.startswith(f"usage: {app} ACTION")
