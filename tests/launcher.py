"""Runs `word2vec` / `twotower` commands as a user does, without re-importing TensorFlow.

Importing TensorFlow is most of a short command's time (~3.5 s of CPU on the 2-core CI
machine). A launcher process imports both apps' entry points, TensorFlow (quietly, as the
apps do) and the modules the actions import lazily, once; each command then runs in a child
forked from it: the child changes directory, applies the command's extra environment
(inherited by what it starts: a local cluster's servers), points fds 1 and 2 at files, sets
sys.argv and calls the console script's entry point (`<app>.__main__.run()`), exactly as
`python -m tf_embeddings.<app>` does after its imports; its exit status is the command's.
(TensorFlow's start-up lines are written once, to the launcher's log: the tests of the quiet
start run plain subprocesses.) Without os.fork, plain subprocesses.
"""
import json
import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading

LAUNCHER = r"""
import json, os, signal, sys, traceback
from tf_embeddings.word2vec import __main__ as word2vec_entry
from tf_embeddings.twotower import __main__ as twotower_entry
from tf_embeddings.training import app as app_lib
app_lib.import_tensorflow()
from tf_embeddings.word2vec import train, evaluate, export  # the actions' lazy imports
from tf_embeddings.twotower import train, evaluate, export
ENTRIES = {"word2vec": word2vec_entry, "twotower": twotower_entry}
for line in sys.stdin:
  req = json.loads(line)
  sys.stdout.flush()
  sys.stderr.flush()
  pid = os.fork()
  if pid == 0:
    code = 1
    try:
      signal.alarm(req["timeout"])  # a hung command ends instead of hanging the tests
      os.chdir(req["cwd"])
      os.environ.update(req["env"])
      for fd, path in ((1, req["stdout"]), (2, req["stderr"])):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
      sys.argv = [req["app"], *req["args"]]
      try:
        ENTRIES[req["app"]].run()
        code = 0
      except SystemExit as e:
        if e.code is None:
          code = 0
        elif isinstance(e.code, int):
          code = e.code
        else:
          print(e.code, file=sys.stderr)
    except BaseException:
      traceback.print_exc()
    finally:
      try:
        sys.stdout.flush()
        sys.stderr.flush()
      finally:
        os._exit(code)
  _, status = os.waitpid(pid, 0)
  print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class Launcher:
  """One launcher process; runs one command at a time."""

  def __init__(self, env):
    self.directory = tempfile.mkdtemp(prefix="app_launcher_")
    self.log = open(os.path.join(self.directory, "launcher.log"), "w+", encoding="utf-8")
    self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=self.log, env=env, text=True)
    self.count = 0

  def run(self, app, args, cwd, env=None, timeout=600):
    self.count += 1
    out, err = (os.path.join(self.directory, f"{self.count}.{n}") for n in ("out", "err"))
    self.proc.stdin.write(json.dumps({
        "app": app, "args": [str(a) for a in args], "cwd": str(cwd), "env": env or {},
        "timeout": int(timeout), "stdout": out, "stderr": err}) + "\n")
    self.proc.stdin.flush()
    reply = self.proc.stdout.readline()
    if not reply:
      self.log.seek(0)
      raise RuntimeError("the launcher died:\n" + self.log.read()[-5000:])
    with open(out, encoding="utf-8", errors="replace") as f_out, \
        open(err, encoding="utf-8", errors="replace") as f_err:
      result = subprocess.CompletedProcess([app, *args], json.loads(reply)["returncode"],
                                           f_out.read(), f_err.read())
    os.remove(out)
    os.remove(err)
    return result

  def close(self):
    self.proc.stdin.close()
    self.proc.wait(timeout=60)
    self.log.close()
    shutil.rmtree(self.directory, ignore_errors=True)


class Launchers:
  """A pool of launchers (one per concurrent caller), or plain subprocesses without fork.

  env: the environment of the launchers (and so of every command, plus its own `env`).
  """

  def __init__(self, env):
    self.env = dict(env)
    self._free = queue.Queue()
    self._all = []
    self._lock = threading.Lock()

  def run(self, app, args, cwd, env=None, timeout=600):
    if not hasattr(os, "fork"):
      return subprocess.run([sys.executable, "-m", f"tf_embeddings.{app}", *map(str, args)],
                            cwd=cwd, env=dict(self.env, **(env or {})), capture_output=True,
                            text=True, timeout=timeout, check=False)
    try:
      launcher = self._free.get_nowait()
    except queue.Empty:
      with self._lock:
        launcher = Launcher(self.env)
        self._all.append(launcher)
    try:
      return launcher.run(app, args, cwd, env, timeout)
    finally:
      self._free.put(launcher)

  def close(self):
    for launcher in self._all:
      launcher.close()
    self._all = []
