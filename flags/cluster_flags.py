"""Flags of tf.distribute, shared by both apps (pure Python: no TensorFlow here)."""
from absl import flags

STRATEGIES = ("default", "parameter_server", "multi_worker", "mirrored")
# Where parameter-server workers get their training data (--cluster_input).
CLUSTER_INPUTS = ("coordinator", "workers")


def parse_local_cluster(text):
  """'workers:2,ps:1' -> (2, 1); ValueError with the reason."""
  counts = {"workers": None, "ps": 0}
  for part in text.split(","):
    key, sep, value = part.strip().partition(":")
    if not sep or key not in counts or not value.strip().isdigit():
      raise ValueError(f"--local_cluster={text}: expected workers:N[,ps:M] with N, M "
                       "integers, e.g. workers:2,ps:1")
    counts[key] = int(value)
  if not counts["workers"]:
    raise ValueError(f"--local_cluster={text}: needs at least one worker (workers:N, N >= 1)")
  return counts["workers"], counts["ps"]


def _valid_local_cluster(text):
  if text:
    try:
      parse_local_cluster(text)
    except ValueError as e:
      raise flags.ValidationError(str(e)) from None
  return True


def define_cluster_flags():
  """Defines --strategy, --num_ps_shards, --local_cluster, --cluster_timeout."""
  flags.DEFINE_enum("strategy", "default", STRATEGIES,
                    "default: one process; parameter_server: this process coordinates "
                    "workers and parameter servers (TF_CONFIG, or --local_cluster), embedding "
                    "tables sharded over the parameter servers; multi_worker: "
                    "synchronous MultiWorkerMirroredStrategy, every worker runs the same "
                    "train (TF_CONFIG, or --local_cluster=workers:N); mirrored: "
                    "MirroredStrategy over this machine's GPUs.")
  flags.DEFINE_integer("num_ps_shards", 0, "parameter_server: shards per embedding table "
                       "(0 = one per parameter server).", lower_bound=0)
  flags.DEFINE_string("local_cluster", "", "Start the cluster here as child processes on "
                      "loopback ports, e.g. workers:2,ps:1 (a demo; a real cluster runs "
                      "`<app> server`, or with multi_worker `<app> train`, with TF_CONFIG "
                      "on each machine).")
  flags.DEFINE_enum("cluster_input", "coordinator", CLUSTER_INPUTS, "parameter_server: "
                    "where the workers' training data comes from. coordinator: from this "
                    "process (word2vec: each block made here and sent to the worker that "
                    "trains it; twotower: the training split inside every worker's dataset); "
                    "workers: each worker reads its share from the run directory (word2vec: "
                    "ids.int32, its blocks made with TensorFlow ops; twotower: "
                    "train_split.bin), so the workers must see --model_dir (a shared file "
                    "system on a real cluster).")
  flags.DEFINE_float("cluster_timeout", 60.0, "Seconds to wait for the cluster's servers "
                     "to answer.", lower_bound=0.0)
  flags.register_validator("local_cluster", _valid_local_cluster,
                           message="--local_cluster: expected workers:N[,ps:M]")


def local_cluster(f):
  """(workers, ps) of a parsed --local_cluster, or None."""
  return parse_local_cluster(f.local_cluster) if f.local_cluster else None
