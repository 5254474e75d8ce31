"""tf.distribute set-up for both apps: --strategy, TF_CONFIG, --local_cluster, `server`.

  default           today's single process (no tf.distribute strategy)
  parameter_server  ParameterServerStrategy: this process is the chief (coordinator); the
                    embedding tables are ShardedVariables over the parameter servers; a
                    ClusterCoordinator schedules steps on the workers (asynchronous)
  multi_worker      MultiWorkerMirroredStrategy: every worker runs the same train
                    (synchronous all-reduce); worker 0 (or the chief) writes the run
                    directory, the others write to temporary directories they remove
  mirrored          MirroredStrategy over this machine's devices (its GPUs; one CPU
                    replica without)

A real cluster follows TensorFlow's convention: every process gets TF_CONFIG. Under
parameter_server, workers and parameter servers run `<app> server`, the chief runs
`<app> train --strategy=...`; `--local_cluster=workers:N,ps:M` starts those servers as child
processes of the chief on free loopback ports (a demo, and what the tests use), waits until
they answer and stops them all when the chief ends, on error and on Ctrl-C too; a child also
dies with a chief killed by -9 (PR_SET_PDEATHSIG). Under multi_worker every worker runs
`<app> train --strategy=multi_worker` with its TF_CONFIG; `--local_cluster=workers:N` runs
N such trains as children (`run_local_workers`) and passes worker 0's output and exit status
through.
"""
import contextlib
import ctypes
import json
import math
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from absl import logging

from tf_embeddings.data.errors import UserError
from tf_embeddings.training import app as app_lib

STRATEGIES = ("default", "parameter_server", "multi_worker", "mirrored")
SERVER_JOBS = ("worker", "ps")
_PR_SET_PDEATHSIG = 1


# ----------------------------------------------------------------------------- TF_CONFIG


def parse_tf_config(text, source="TF_CONFIG"):
  """The cluster and task of a TF_CONFIG string (UserError naming what is wrong).

  Returns:
    (cluster {job: [address, ...]}, task_type, task_index).
  """
  hint = ('expected {"cluster": {"worker": ["host:port", ...], "ps": [...], "chief": [...]}, '
          '"task": {"type": "worker", "index": 0}}')
  if not text or not text.strip():
    raise UserError(f"{source} is not set: {hint}")
  try:
    d = json.loads(text)
  except ValueError as e:
    raise UserError(f"{source} is not JSON ({e}): {hint}") from None
  if not isinstance(d, dict) or not isinstance(d.get("cluster"), dict) or not d["cluster"]:
    raise UserError(f"{source} has no \"cluster\": {hint}")
  cluster = {}
  for job, addresses in d["cluster"].items():
    if (not isinstance(addresses, list) or not addresses
        or not all(isinstance(a, str) and _is_address(a) for a in addresses)):
      raise UserError(f"{source}: cluster job {job!r} must be a list of \"host:port\" "
                      f"strings, got {addresses!r}")
    cluster[job] = list(addresses)
  task = d.get("task")
  if not isinstance(task, dict) or "type" not in task:
    raise UserError(f"{source} has no \"task\": {hint}")
  task_type, index = task["type"], task.get("index", 0)
  if task_type not in cluster:
    raise UserError(f"{source}: task type {task_type!r} is not a job of the cluster "
                    f"({', '.join(sorted(cluster))})")
  if not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
    raise UserError(f"{source}: task index {index!r} is out of range for job {task_type!r} "
                    f"({len(cluster[task_type])} tasks)")
  return cluster, task_type, index


def _is_address(a):
  host, _, port = a.rpartition(":")
  return bool(host) and port.isdigit() and 0 < int(port) < 65536


# ----------------------------------------------------------------------------- ports, waits


def free_ports(n):
  """n distinct free TCP ports on the loopback interface, chosen by the OS."""
  socks = []
  try:
    for _ in range(n):
      s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
      s.bind(("127.0.0.1", 0))
      socks.append(s)
    return [s.getsockname()[1] for s in socks]
  finally:
    for s in socks:
      s.close()


def _answers(address, timeout=0.5):
  host, _, port = address.rpartition(":")
  try:
    with socket.create_connection((host, int(port)), timeout=timeout):
      return True
  except OSError:
    return False


def wait_for_cluster(tasks, timeout, processes=None):
  """Waits until every task's address accepts connections.

  Args:
    tasks: {"worker:0": "host:port", ...} the servers to wait for.
    timeout: seconds.
    processes: optional {"worker:0": LocalCluster task}: a child that exits is reported at
      once with the last line of its log.
  Raises:
    UserError naming the tasks that did not answer.
  """
  deadline = time.monotonic() + timeout
  waiting = dict(tasks)
  while True:
    for name in list(waiting):
      if processes and name in processes:
        processes[name].check_alive()
      if _answers(waiting[name]):
        del waiting[name]
    if not waiting:
      return
    if time.monotonic() > deadline:
      shown = ", ".join(f"{n} at {a}" for n, a in sorted(waiting.items()))
      raise UserError(f"the cluster did not answer within {timeout:g}s ({shown}): start "
                      "`<app> server` there with the same TF_CONFIG, or raise "
                      "--cluster_timeout")
    time.sleep(0.2)


# ----------------------------------------------------------------------------- servers


def serve(stop_after=None):
  """The `server` action: a tf.distribute.Server for this TF_CONFIG task; blocks.

  Returns when the process gets SIGTERM or SIGINT (or after `stop_after` seconds).
  """
  cluster, task_type, index = parse_tf_config(os.environ.get("TF_CONFIG", ""))
  if task_type not in SERVER_JOBS:
    raise UserError(f"TF_CONFIG task type is {task_type!r}: `server` runs the {' and '.join(SERVER_JOBS)} "
                    "tasks; the chief runs `train --strategy=...`")
  # Fail RPCs at once when a peer is gone, so that the coordinator can reschedule
  # (TensorFlow's parameter-server guide).
  os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
  tf = app_lib.import_tensorflow()
  stop = threading.Event()
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda *_: stop.set())
  server = tf.distribute.Server(tf.train.ClusterSpec(cluster), job_name=task_type,
                                task_index=index, protocol="grpc", start=True)
  logging.info("%s:%d serving at %s", task_type, index, server.target)
  stop.wait(stop_after)
  logging.info("%s:%d stopping", task_type, index)


def _die_with_parent():
  """In the child before exec: SIGKILL when the parent dies (Linux), own session."""
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  except (OSError, AttributeError):
    pass


class _Task:
  """One child server process and its log file."""

  def __init__(self, name, process, log_path):
    self.name, self.process, self.log_path = name, process, log_path

  def last_log_line(self):
    try:
      with open(self.log_path, encoding="utf-8", errors="replace") as f:
        lines = [l.strip() for l in f if l.strip()]
    except OSError:
      return ""
    useful = [l for l in lines if "rror" in l] or lines
    return useful[-1][-300:] if useful else ""

  def check_alive(self):
    rc = self.process.poll()
    if rc is not None:
      raise UserError(f"local cluster: {self.name} exited with status {rc} "
                      f"({self.last_log_line() or 'no output'})")


class LocalCluster:
  """`--local_cluster=workers:N,ps:M`: N workers and M parameter servers as child processes
  of this one (the chief) on free loopback ports, each running `python -m tf_embeddings.<app> server`
  with its TF_CONFIG.

  Use as a context manager: entering starts the servers and waits for them; leaving (also
  by an exception or Ctrl-C) terminates them, then kills what has not ended in 10 s.
  """

  def __init__(self, app_module, workers, ps, timeout=60.0):
    if workers < 1:
      raise UserError("--local_cluster needs at least one worker (workers:N, N >= 1)")
    self.app_module = app_module
    ports = free_ports(1 + workers + ps)
    address = lambda p: f"localhost:{p}"
    self.cluster = {"chief": [address(ports[0])],
                    "worker": [address(p) for p in ports[1:1 + workers]]}
    if ps:
      self.cluster["ps"] = [address(p) for p in ports[1 + workers:]]
    self.timeout = timeout
    self.tasks = {}
    self.log_dir = None

  def tf_config(self, task_type, index):
    return json.dumps({"cluster": self.cluster, "task": {"type": task_type, "index": index}})

  def start_task(self, task_type, index):
    """(Re)starts one server child."""
    name = f"{task_type}:{index}"
    log_path = os.path.join(self.log_dir, f"{task_type}-{index}.log")
    env = dict(os.environ, TF_CONFIG=self.tf_config(task_type, index))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with open(log_path, "ab") as log:
      process = subprocess.Popen(  # pylint: disable=consider-using-with
          [sys.executable, "-m", self.app_module, "server"], env=env,
          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
          preexec_fn=_die_with_parent, start_new_session=True)
    self.tasks[name] = _Task(name, process, log_path)
    return self.tasks[name]

  def __enter__(self):
    self.log_dir = tempfile.mkdtemp(prefix="local-cluster-")
    try:
      for job in SERVER_JOBS:
        for i in range(len(self.cluster.get(job, ()))):
          self.start_task(job, i)
      logging.info("local cluster: %s (logs in %s)", json.dumps(self.cluster), self.log_dir)
      wait_for_cluster({n: self.address(n) for n in self.tasks}, self.timeout, self.tasks)
    except BaseException:
      self.stop()
      raise
    return self

  def __exit__(self, *exc):
    self.stop()

  def address(self, name):
    job, index = name.split(":")
    return self.cluster[job][int(index)]

  def pids(self):
    return {n: t.process.pid for n, t in self.tasks.items()}

  def stop(self):
    """Terminates every child (SIGTERM, then SIGKILL after 10 s); removes the logs."""
    for task in self.tasks.values():
      if task.process.poll() is None:
        with contextlib.suppress(OSError):
          task.process.terminate()
    deadline = time.monotonic() + 10
    for task in self.tasks.values():
      try:
        task.process.wait(max(deadline - time.monotonic(), 0.1))
      except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
          task.process.kill()
        task.process.wait()
    if self.log_dir:
      shutil.rmtree(self.log_dir, ignore_errors=True)
      self.log_dir = None


# ----------------------------------------------------------------------------- Ctrl-C


INTERRUPT_GRACE_SECS = 15.0


# The byte interrupt_watchdog writes to its own pipe when KeyboardInterrupt leaves its
# context (no signal has number 0), and how long it waits for its thread to read it.
_ACK = b"\0"
ACK_WAIT_SECS = 5.0


@contextlib.contextmanager
def interrupt_watchdog(cleanups, grace=INTERRUPT_GRACE_SECS):
  """Makes Ctrl-C end a chief even while its main thread is blocked in TensorFlow.

  Python runs its SIGINT handler (KeyboardInterrupt) only when the main thread comes back
  to the interpreter; a chief waiting in a remote call (variables created on a parameter
  server, a step the coordinator waits for, a collective) may come back late or never,
  and TensorFlow code can swallow the exception. The C-level handler still writes the
  signal's number to the wakeup fd (`signal.set_wakeup_fd`): a thread reading it leaves
  the usual path `grace` seconds (KeyboardInterrupt, the servers stopped by their context
  managers, exit 130), then runs `cleanups` (a list the caller fills: stopping the local
  cluster), prints the same message and ends the process with status 130. A second Ctrl-C
  does so at once. Nothing is half-written by that: checkpoints and exports are written
  atomically, and the run directory's lock is an flock, released with the process.

  Once a Ctrl-C came, the thread stays on after this context ends (until the process
  exits), so that a hang further up the interrupted path is bounded too; when the context
  is left with KeyboardInterrupt it first lets the thread read the pipe up to that point
  (on a loaded machine the exception can come out before the thread saw the signal), and
  a KeyboardInterrupt raised by code, without a Ctrl-C, leaves it as any exception does.
  Outside the main thread (set_wakeup_fd is only allowed there) this does nothing.
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

  def force_exit():
    for cleanup in reversed(cleanups):
      with contextlib.suppress(Exception):
        cleanup()
    with contextlib.suppress(Exception):
      sys.stderr.write(app_lib.INTERRUPTED)
      sys.stderr.flush()
    os._exit(130)  # pylint: disable=protected-access

  def watch():
    deadline = None
    while True:
      timeout = None if deadline is None else max(deadline - time.monotonic(), 0.0)
      ready, _, _ = select.select([read_fd], [], [], timeout)
      if not ready:  # the grace after the first Ctrl-C is over
        force_exit()
      data = os.read(read_fd, 64)
      if not data:  # the context ended
        if not interrupted.is_set():
          return
        # A Ctrl-C came just as it ended: its grace still bounds the way out.
        time.sleep(max(deadline - time.monotonic(), 0.0))
        force_exit()
      for byte in data:  # in the order written: a signal's byte before the ack it caused
        if byte == _ACK[0]:
          acknowledged.set()
        elif byte == signal.SIGINT:
          if interrupted.is_set():
            force_exit()
          interrupted.set()
          deadline = time.monotonic() + grace

  interrupted, acknowledged = threading.Event(), threading.Event()
  thread = threading.Thread(target=watch, name="interrupt-watchdog", daemon=True)
  thread.start()
  try:
    yield
  except KeyboardInterrupt:
    # Leaving with KeyboardInterrupt, maybe before the watchdog read the Ctrl-C's byte (a
    # loaded machine): let it read up to here, so that `interrupted` says whether a Ctrl-C
    # came (a KeyboardInterrupt raised by code has none) and the watchdog stays on if so.
    with contextlib.suppress(OSError):
      os.write(write_fd, _ACK)
      acknowledged.wait(ACK_WAIT_SECS)
    raise
  finally:
    if not interrupted.is_set():
      signal.set_wakeup_fd(previous)
      os.close(write_fd)  # the thread reads the end of the pipe and returns
      thread.join()
      os.close(read_fd)


# ----------------------------------------------------------------------------- strategies


class _TablePartitioner:
  """variable_partitioner of ParameterServerStrategy: splits the rows of the variables
  created inside `tables()` (the embedding tables) into `num_shards`; every other variable
  (dense layers, counters) stays whole on one parameter server."""

  def __init__(self, num_shards):
    self.num_shards = num_shards
    self._local = threading.local()

  @contextlib.contextmanager
  def tables(self):
    old = getattr(self._local, "on", False)
    self._local.on = True
    try:
      yield
    finally:
      self._local.on = old

  def __call__(self, shape, dtype, axis=0):  # pylint: disable=unused-argument
    if not getattr(self._local, "on", False) or shape.rank < 1:
      return [1] * max(shape.rank, 1)
    shards = max(1, min(self.num_shards, int(shape[0])))
    return [shards] + [1] * (shape.rank - 1)


class Distribution:
  """The strategy a train runs under.

  Attributes:
    kind: one of STRATEGIES.
    strategy: the tf.distribute.Strategy (the default strategy for "default").
    coordinator: the ClusterCoordinator (parameter_server), else None.
    num_workers: workers that run steps (1 for "default").
  """

  def __init__(self, kind, strategy, coordinator=None, num_workers=1, partitioner=None,
               cluster=None, is_chief=True):
    self.kind = kind
    self.strategy = strategy
    self.coordinator = coordinator
    self.num_workers = num_workers
    self.cluster = cluster or {}
    self.is_chief = is_chief
    self._partitioner = partitioner

  @property
  def distributed(self):
    return self.kind != "default"

  @property
  def replicated(self):
    """Synchronous replicas (multi_worker, mirrored): each step's batch is split over
    `strategy.num_replicas_in_sync` replicas and their gradients summed."""
    return self.kind in ("multi_worker", "mirrored")

  @property
  def table_shards(self):
    """Shards per embedding table (1: whole tables, as in one process)."""
    return self._partitioner.num_shards if self._partitioner else 1

  def scope(self):
    """Variables created here belong to the strategy (on the parameter servers)."""
    return self.strategy.scope() if self.distributed else contextlib.nullcontext()

  def tables(self):
    """Variables created here (inside scope()) are embedding tables: sharded by rows."""
    return self._partitioner.tables() if self._partitioner else contextlib.nullcontext()


def default():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return Distribution("default", tf.distribute.get_strategy())


@contextlib.contextmanager
def distribution(app_name, app_module, strategy="default", supported=("default",),
                 num_ps_shards=0, local_cluster=None, cluster_timeout=60.0):
  """Sets up the strategy of one train: yields a `Distribution`, stops what it started.

  Args:
    app_name: "word2vec" or "twotower" (for messages).
    app_module: the module whose `server` action the local cluster runs.
    strategy: one of STRATEGIES.
    supported: the strategies this app implements.
    num_ps_shards: shards per embedding table (0: one per parameter server).
    local_cluster: None, or (workers, ps) to start as child processes.
    cluster_timeout: seconds to wait for the servers.
  """
  if strategy not in STRATEGIES:
    raise UserError(f"--strategy={strategy} is unknown: use one of {', '.join(STRATEGIES)}")
  if strategy not in supported:
    raise UserError(f"{app_name} does not support --strategy={strategy} yet: use "
                    f"{' or '.join('--strategy=' + s for s in supported)}")
  if strategy == "default":
    if local_cluster:
      raise UserError("--local_cluster needs a distributed --strategy (e.g. "
                      "--strategy=parameter_server)")
    yield default()
    return
  if strategy == "parameter_server":
    with contextlib.ExitStack() as stack:
      cleanups = []
      stack.enter_context(interrupt_watchdog(cleanups))
      if local_cluster:
        workers, ps = local_cluster
        if ps < 1:
          raise UserError("--strategy=parameter_server needs at least one parameter server: "
                          "--local_cluster=workers:N,ps:M with M >= 1")
        local = LocalCluster(app_module, workers, ps, cluster_timeout)
        cleanups.append(local.stop)
        stack.enter_context(local)
        cluster, task_type, index = local.cluster, "chief", 0
      else:
        cluster, task_type, index = parse_tf_config(os.environ.get("TF_CONFIG", ""))
        for job in ("worker", "ps"):
          if job not in cluster:
            raise UserError(f"TF_CONFIG: --strategy=parameter_server needs a {job!r} job in "
                            "the cluster")
        if task_type != "chief":
          raise UserError(f"TF_CONFIG task type is {task_type!r}: `train` runs on the chief "
                          f"(workers and parameter servers run `{app_name} server`)")
        wait_for_cluster({f"{job}:{i}": a for job in ("worker", "ps")
                          for i, a in enumerate(cluster[job])}, cluster_timeout)
      try:
        yield _parameter_server(cluster, task_type, index, num_ps_shards)
      except lost_peer_errors() as e:
        # A parameter server (or every worker) is gone: the variables live there, so the
        # run cannot go on; its checkpoints can.
        raise cluster_lost("server", e) from None
      except UserError:
        raise
      except Exception as e:  # pylint: disable=broad-except
        # Another error while a server no longer answers is that server's loss (an op on
        # its variables can fail with another error class, depending on when it died).
        gone = [f"{job}:{i}" for job in ("ps", "worker")
                for i, address in enumerate(cluster[job]) if not _answers(address)]
        if not gone:
          raise
        raise cluster_lost("server", e, gone) from None
    return
  if local_cluster:
    raise UserError(f"--strategy={strategy} runs no --local_cluster here: "
                    + ("the app starts its workers itself (run_local_workers)"
                       if strategy == "multi_worker" else "it uses this machine's devices"))
  if strategy == "mirrored":
    yield _mirrored()
    return
  if strategy == "multi_worker":
    with interrupt_watchdog([]):
      dist = _multi_worker(app_name, cluster_timeout)
      try:
        yield dist
      except lost_peer_errors() as e:
        # A peer died mid-step (its collectives fail here): synchronous replicas cannot go
        # on without it; the chief's checkpoints can.
        raise cluster_lost("worker", e) from None
    return
  raise UserError(f"--strategy={strategy} is not implemented")  # pragma: no cover


def lost_peer_errors():
  """The TensorFlow errors an op raises when a server or worker of the cluster is gone."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  return (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError)


def cluster_lost(what, error, gone=()):
  """The one-line UserError for a lost "server" or "worker" (`error` its TF error; `gone`
  the tasks found not answering, if checked)."""
  where = f"{', '.join(gone)} not answering; " if gone else ""
  return UserError(f"the cluster lost a {what} ({where}{type(error).__name__}: "
                   f"{error_summary(error)}): restart it and rerun the same command to "
                   "resume from the last checkpoint")


def error_summary(error, limit=200):
  """The gist of a TensorFlow op error on one line: its message without the "Graph
  execution error" header and the Python stack of "Detected at node ... defined at"."""
  kept, in_stack = [], False
  for line in str(getattr(error, "message", None) or error).splitlines():
    if line.startswith("Detected at node"):
      in_stack = True
      continue
    if in_stack and (not line.strip() or line[:1] in (" ", "\t")):
      continue
    in_stack = False
    if line.strip() and line.strip() != "Graph execution error:":
      kept.append(line.strip())
  return " ".join(" ".join(kept).split())[:limit]


def _parameter_server(cluster, task_type, index, num_ps_shards):
  os.environ.setdefault("GRPC_FAIL_FAST", "use_caller")
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(cluster), task_type=task_type, task_id=index, rpc_layer="grpc")
  partitioner = _TablePartitioner(num_ps_shards or len(cluster["ps"]))
  strategy = tf.distribute.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
  coordinator = tf.distribute.coordinator.ClusterCoordinator(strategy)
  logging.info("parameter_server: %d workers, %d parameter servers, tables in %d shards",
               len(cluster["worker"]), len(cluster["ps"]), partitioner.num_shards)
  return Distribution("parameter_server", strategy, coordinator, len(cluster["worker"]),
                      partitioner, cluster)


def _mirrored():
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  gpus = tf.config.list_logical_devices("GPU")
  # MirroredStrategy's own default: every GPU, else the CPU (one replica).
  strategy = tf.distribute.MirroredStrategy()
  logging.info("mirrored: %d replicas (%s)", strategy.num_replicas_in_sync,
               ", ".join(strategy.extended.worker_devices) if gpus else "no GPU: the CPU")
  return Distribution("mirrored", strategy)


def _multi_worker(app_name, cluster_timeout):
  """MultiWorkerMirroredStrategy for this TF_CONFIG task (after every peer answered)."""
  cluster, task_type, index = parse_tf_config(os.environ.get("TF_CONFIG", ""))
  if "ps" in cluster:
    raise UserError("TF_CONFIG: --strategy=multi_worker takes no \"ps\" job (that is "
                    "--strategy=parameter_server)")
  if task_type not in ("worker", "chief") or "worker" not in cluster:
    raise UserError(f"TF_CONFIG: --strategy=multi_worker needs a \"worker\" job and runs "
                    f"on its workers (and chief), not on a {task_type!r} task")
  me = f"{task_type}:{index}"
  peers = {f"{job}:{i}": a for job in ("chief", "worker") for i, a in
           enumerate(cluster.get(job, ())) if f"{job}:{i}" != me}
  rendezvous(cluster[task_type][index], peers, cluster_timeout, app_name)
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(cluster), task_type=task_type, task_id=index, rpc_layer="grpc")
  strategy = tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
  # TensorFlow's rule: the chief, or worker 0 when the cluster has none.
  is_chief = task_type == "chief" or ("chief" not in cluster and index == 0)
  workers = sum(len(cluster.get(job, ())) for job in ("chief", "worker"))
  logging.info("multi_worker: %d workers, %d replicas; this is %s%s", workers,
               strategy.num_replicas_in_sync, me, " (chief)" if is_chief else "")
  return Distribution("multi_worker", strategy, num_workers=workers, cluster=cluster,
                      is_chief=is_chief)


def rendezvous(own_address, peers, timeout, app_name="<app>"):
  """Waits until every peer's address answers, answering on our own meanwhile.

  MultiWorkerMirroredStrategy's constructor waits for its peers without a timeout and
  without releasing the interpreter (no Python thread or signal handler runs until it
  returns), so the wait happens here first: this process listens on its own port (a plain
  socket, closed before TensorFlow binds it) and polls the peers', which answer through
  theirs or, once past this point, through TensorFlow's server.
  """
  port = int(own_address.rpartition(":")[2])
  listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  try:
    listener.bind(("", port))
  except OSError as e:
    listener.close()
    raise UserError(f"cannot listen on port {port} of {own_address} ({e.strerror}): is "
                    "another process using it?") from None
  listener.listen(64)
  listener.setblocking(False)
  stop = threading.Event()

  def answer():
    while not stop.is_set():
      try:
        conn, _ = listener.accept()
        conn.close()
      except BlockingIOError:
        time.sleep(0.05)
      except OSError:
        return

  thread = threading.Thread(target=answer, daemon=True)
  thread.start()
  try:
    try:
      wait_for_cluster(peers, timeout)
    except UserError:
      shown = ", ".join(f"{n} at {a}" for n, a in sorted(peers.items()) if not _answers(a))
      raise UserError(f"the cluster did not answer within {timeout:g}s ({shown}): run "
                      f"`{app_name} train --strategy=multi_worker` there with its TF_CONFIG, "
                      "or raise --cluster_timeout") from None
    time.sleep(1.0)  # peers polling us see us before the port changes hands
  finally:
    stop.set()
    thread.join()
    listener.close()


def run_local_workers(app_module, workers, timeout, argv=None):
  """`--strategy=multi_worker --local_cluster=workers:N`: runs N copies of this train
  command as child processes, worker i with its TF_CONFIG on free loopback ports; worker 0
  is the chief and writes to the terminal, the others to log files. Returns worker 0's exit
  status; a worker that fails first ends the others (one line naming it); the children die
  with this process (Ctrl-C, kill -9 too).

  Args:
    app_module: e.g. "tf_embeddings.twotower".
    workers: N >= 1.
    timeout: --cluster_timeout (each worker waits that long for the others).
    argv: the command's arguments (default sys.argv[1:]); `--local_cluster=` is appended
      so that the children train as cluster members.
  """
  if workers < 1:
    raise UserError("--local_cluster needs at least one worker (workers:N, N >= 1)")
  argv = list(sys.argv[1:] if argv is None else argv) + ["--local_cluster="]
  cluster = {"worker": [f"localhost:{p}" for p in free_ports(workers)]}
  log_dir = tempfile.mkdtemp(prefix="local-workers-")
  tasks = []
  try:
    for i in range(workers):
      env = dict(os.environ, TF_CONFIG=json.dumps(
          {"cluster": cluster, "task": {"type": "worker", "index": i}}))
      log_path = os.path.join(log_dir, f"worker-{i}.log")
      with open(log_path, "ab") as log:
        out = {} if i == 0 else {"stdout": log, "stderr": subprocess.STDOUT}
        process = subprocess.Popen(  # pylint: disable=consider-using-with
            [sys.executable, "-m", app_module, *argv], env=env, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent, start_new_session=True, **out)
      tasks.append(_Task(f"worker:{i}", process, log_path))
    logging.info("local cluster: %d workers %s (worker 0 here; logs of the others in %s)",
                 workers, json.dumps(cluster), log_dir)
    while True:
      rc = tasks[0].process.poll()
      if rc is not None:
        if rc != 0:
          return rc  # worker 0 wrote its own error line
        break
      for task in tasks[1:]:
        if task.process.poll() not in (None, 0):
          task.check_alive()  # raises, naming the worker and its last line
      time.sleep(0.2)
    # Worker 0 is done: the others end with the same last step.
    deadline = time.monotonic() + 60
    for task in tasks[1:]:
      try:
        task.process.wait(max(deadline - time.monotonic(), 0.1))
      except subprocess.TimeoutExpired:
        logging.warning("%s did not end with worker 0: stopping it", task.name)
      if task.process.poll() not in (None, 0):
        task.check_alive()
    return 0
  finally:
    for task in tasks:
      if task.process.poll() is None:
        with contextlib.suppress(OSError):
          task.process.terminate()
    for task in tasks:
      try:
        task.process.wait(10)
      except subprocess.TimeoutExpired:
        with contextlib.suppress(OSError):
          task.process.kill()
        task.process.wait()
    shutil.rmtree(log_dir, ignore_errors=True)


# ----------------------------------------------------------------------------- tables


def table_shards(table):
  """The shards of a sharded table (a ShardedVariable's `variables`: row blocks in order,
  the first ones a row longer), or None for a single tensor or variable."""
  shards = getattr(table, "variables", None)
  return list(shards) if isinstance(shards, (list, tuple)) else None


def gather_rows(table, ids):
  """tf.gather(table, ids) for a tf.Variable or a ShardedVariable, ids of any rank.

  A ShardedVariable (a table under ParameterServerStrategy) is read shard by shard with
  tf.nn.embedding_lookup over its shards ("div": the first shards hold one row more, as
  the strategy splits them): `tf.gather` on the ShardedVariable itself returns the rows of
  ids spanning shards in shard order, not in the order of ids (TF 2.21: ids [7, 2, 9, 0] of
  a 10-row table in 2 shards give rows [2, 0, 7, 9]; tests/test_distribute.py), and takes
  1-D ids only. Both apps read their tables through this.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  shards = table_shards(table)
  if shards is None:
    return tf.gather(table, ids)
  flat = tf.reshape(ids, [-1])
  rows = tf.nn.embedding_lookup(shards, flat)
  if ids.shape.rank == 1:
    return rows
  return tf.reshape(rows, tf.concat([tf.shape(ids), tf.shape(rows)[1:]], 0))


def stateless_rows(distribution, shape, seed, start, count):
  """Rows [start, start + count) of tf.random.stateless_uniform(shape, seed) (values in
  [0, 1)) or tf.random.stateless_normal(shape, seed): the same bits, made without the
  other rows. Philox gives 4 float32 per counter step for both, so the rows begin at
  counter + floor(start * dim / 4), less the elements before `start` in that step.

  Args:
    distribution: "uniform" or "normal".
    shape: [rows, dim] of the whole table.
    seed: the stateless seed, shape [2] ints.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  dim = int(shape[1])
  first = start * dim
  aligned = first // 4 * 4
  key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=tf.constant(seed, tf.int64))
  alg = tf.raw_ops.StatelessRandomGetAlg()
  low, high = (int(x) for x in counter.numpy())
  step = low + aligned // 4  # a 128-bit counter: carry into `high`
  moved = tf.constant([step % (1 << 64), (high + (step >> 64)) % (1 << 64)], tf.uint64)
  op = {"uniform": tf.raw_ops.StatelessRandomUniformV2,
        "normal": tf.raw_ops.StatelessRandomNormalV2}[distribution]
  flat = op(shape=[(start + count) * dim - aligned], key=key, counter=moved, alg=alg,
            dtype=tf.float32)
  return tf.reshape(flat[first - aligned:], [count, dim])


def row_initial(shape, rows=None):
  """An initial value for tf.Variable(row_initial(shape, rows), shape=shape, dtype=float32)
  made by rows(start, count) -> the rows [start, start + count) of the table; without
  `rows`, zeros.

  Under a ParameterServerStrategy with a partitioner, each shard's rows are made alone, on
  the shard's parameter server (the strategy passes partition_shape and partition_offset),
  so no whole table is ever made on the chief (100M x 32 float32: 12.8 GB); in one process,
  the whole table at once.
  """
  if rows is None:
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    rows = lambda start, count: tf.zeros([count, *shape[1:]])

  def initial(partition_shape=None, partition_offset=None):
    if partition_shape is None:
      return rows(0, int(shape[0]))
    return rows(int(partition_offset[0]), int(partition_shape[0]))

  return initial


# ----------------------------------------------------------------------------- row layout

# The multiplier of a spread layout is the integer nearest size / golden ratio that is
# coprime with size: consecutive ids then land evenly over any split of the rows into
# contiguous ranges (the three-distance theorem), so that no shard of a count-sorted
# vocabulary holds all the frequent words.
_GOLDEN = (5 ** 0.5 - 1) / 2


class RowLayout:
  """Where id i's row is in a table of `size` rows: row(i) = i x multiplier mod size, a
  bijection (multiplier coprime with size) that keeps id 0 at row 0; multiplier 1: row = id.

  word2vec's ids are sorted by count and ParameterServerStrategy splits a table into
  contiguous row ranges ("div"), so with row = id the first shard holds the most frequent
  words: the largest of 2 / 8 / 64 shards serves 88-92% / 51-60% / 11-15% of a block's
  distinct rows on text (docs/scaling.md). `spread(size)` interleaves them. The layout
  depends on the table's size only, not on the shard count, so a checkpoint restores into
  any number of shards; one process reads it back in id order (`to_ids`).
  """

  def __init__(self, size, multiplier=1):
    size, multiplier = int(size), int(multiplier)
    if size < 1 or not 1 <= multiplier < max(size, 2) or math.gcd(multiplier, size) != 1:
      raise ValueError(f"no row layout of {size} rows with multiplier {multiplier}")
    self.size, self.multiplier = size, multiplier

  @classmethod
  def spread(cls, size):
    size = int(size)
    multiplier = max(1, round(size * _GOLDEN))
    while math.gcd(multiplier, size) != 1:
      multiplier += 1
    return cls(size, multiplier if multiplier < size else 1)

  @property
  def identity(self):
    return self.multiplier == 1

  def rows(self, ids):
    """The rows of `ids` (a tensor of int32 or int64, any shape), in the same dtype."""
    if self.identity:
      return ids
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    wide = tf.cast(ids, tf.int64)
    return tf.cast(tf.math.floormod(wide * self.multiplier, self.size), ids.dtype)

  def rows_np(self, ids):
    """`rows` on a numpy array (int64 arithmetic: exact for tables below 2^31 rows)."""
    import numpy as np  # pylint: disable=import-outside-toplevel
    ids = np.asarray(ids)
    if self.identity:
      return ids
    return (ids.astype(np.int64) * self.multiplier % self.size).astype(ids.dtype)

  def to_ids(self, table):
    """A [size, ...] tensor or numpy array in row order -> the same rows in id order (row i
    of the result is id i's), of the same kind: one gather, a copy of the table (the
    identity layout: the table itself)."""
    if self.identity:
      return table
    import numpy as np  # pylint: disable=import-outside-toplevel
    if isinstance(table, np.ndarray):
      return table[self.rows_np(np.arange(self.size))]
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    return tf.gather(table, self.rows(tf.range(self.size, dtype=tf.int64)))
