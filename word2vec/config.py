"""The configuration of a word2vec run, and `resolve`: every default decided once.

A setting left unset (None; 0 for the numbers, as config.json recorded --learning_rate=0
before) takes a default that may depend on the model or the loss. `resolve` decides them all,
and `Config` calls it when it is built, so every Config is resolved: from the flags
(flags/word2vec_flags.py), from a run's config.json (a run recorded before a default was
decided here resolves to the values it trained with), from a benchmark or a test. config.json
records the decided values. The run directory (config.json, what may change on resume) is
training/rundir.py's (`run_dir`).
"""
import dataclasses
import typing

from tf_embeddings.data.errors import UserError
from tf_embeddings.training import rundir as rundir_lib

# The choices of the config's enum fields (here, not in model.py, so that the flags and
# `word2vec --help` need no TensorFlow). SAMPLERS equals losses.samplers.SAMPLERS (tested).
MODELS = ("skipgram", "cbow")
LOSSES = ("nce", "sampled_softmax")
SAMPLERS = ("log_uniform", "unigram", "uniform", "learned_unigram")
# How a row that several examples of one step update moves (`kernels.row_scale`).
ROW_UPDATES = ("bounded", "sum")

# The defaults `resolve` decides. Skip-gram is trained with NCE, CBOW with sampled softmax.
DEFAULT_LOSS = {"skipgram": "nce", "cbow": "sampled_softmax"}
# subtract_log_q and train_biases: Mikolov's negative sampling for nce (no log Q, no biases,
# as word2vec.c), the textbook sampled softmax of tf.nn for sampled_softmax.
DEFAULT_SUBTRACT_LOG_Q = {"nce": False, "sampled_softmax": True}
DEFAULT_TRAIN_BIASES = {"nce": False, "sampled_softmax": True}
DEFAULT_LEARNING_RATE = {"skipgram": 0.025, "cbow": 0.05}
# Negatives per group of examples (DEFAULT_GROUP_SIZE). Measured with groups of 64 on
# SOTU+Brown (benchmarks/): skip-gram + nce analogy 0.064 with 5, 0.074 with 8 (gensim with
# 5 per pair: 0.071-0.075); CBOW + sampled softmax 0.043 with 5, 0.062 with 16, 0.067 with
# 32 (gensim 0.055-0.058). Sampled inside the compiled step, 8 cost skip-gram nothing
# measurable and 16 cost CBOW about 10%.
DEFAULT_NUM_SAMPLED = {"nce": 8, "sampled_softmax": 16}
# Examples sharing one draw of negatives. CBOW on SOTU+Brown (validation, seeds 1-4): 64 gave
# analogy 0.055/0.057/0.064/0.058, 128 gave 0.054/0.060/0.056/0.057 (within the seeds'
# spread; SimLex-999 0.096/0.092/0.084/0.068 -> 0.102/0.090/0.110/0.083) and a 7% faster
# compiled block (half the sampled rows to update; README). Skip-gram keeps 64.
DEFAULT_GROUP_SIZE = {"skipgram": 64, "cbow": 128}
# Centres per minibatch. Skip-gram trains all the pairs of a centre's window at once (about
# window + 1 per centre): 256 centres are ~1,500 pairs. On SOTU+Brown (3 epochs, lr 0.025)
# 512, 1024 and 4096 centres diverged; 256 gave analogy 0.068-0.072.
DEFAULT_BATCH_SIZE = {"skipgram": 256, "cbow": 4096}
# The largest --batch_size the flags allow: measured to train to the end with the bounded
# row update at the default learning rate on the 21M-token stress corpus (README,
# "Stability"); skip-gram at 16384 centres diverged there (inf at step 1024), CBOW beyond
# 16384 was not measured.
MAX_BATCH_SIZE = {"skipgram": 4096, "cbow": 16384}
# Minibatches per compiled call. Skip-gram's minibatches are small: 64 per call cut the data
# wait from 2.0-2.3 s to 0.6-0.7 s of a 20 s run (benchmarks/word2vec_loop_timing.py).
DEFAULT_STEPS_PER_CALL = {"skipgram": 64, "cbow": 16}


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a word2vec run depends on. See flags/word2vec_flags.py for the meaning.

  Built resolved: `resolve` decides the settings left unset when the Config is built.
  """
  # Runs recorded before --row_update existed trained with the plain sum: they resume so
  # (training.rundir.config_from_dict), and a new default never changes a recorded run.
  LEGACY_DEFAULTS: typing.ClassVar[dict] = {"row_update": "sum"}
  model_dir: str
  corpus: str = ""
  tokenizer: str = "text8"
  min_count: int = 5
  max_vocab_size: int = 0
  model: str = "skipgram"
  loss: typing.Optional[str] = None  # None = DEFAULT_LOSS of the model
  sampler: str = "unigram"
  distortion: float = 0.75
  num_sampled: typing.Optional[int] = None  # None or 0 = DEFAULT_NUM_SAMPLED of the loss
  group_size: typing.Optional[int] = None  # None or 0 = DEFAULT_GROUP_SIZE of the model;
  # above batch_size: batch_size
  subtract_log_q: typing.Optional[bool] = None  # None = DEFAULT_SUBTRACT_LOG_Q of the loss
  remove_accidental_hits: bool = True
  train_biases: typing.Optional[bool] = None  # None = DEFAULT_TRAIN_BIASES of the loss
  row_update: str = "bounded"
  embedding_dim: int = 100
  window: int = 5
  subsample: float = 1e-3
  epochs: int = 3
  batch_size: typing.Optional[int] = None  # None or 0 = DEFAULT_BATCH_SIZE of the model
  steps_per_call: typing.Optional[int] = None  # None or 0 = DEFAULT_STEPS_PER_CALL of the model
  learning_rate: typing.Optional[float] = None  # None or 0 = DEFAULT_LEARNING_RATE of the model
  min_learning_rate_ratio: float = 1e-4
  seed: int = 1
  eval_fraction: float = 0.01
  eval_examples: int = 4096
  eval_every_epochs: int = 0  # 0 = only after the last epoch
  summary_every_secs: float = 5.0
  checkpoint_every_steps: int = 0  # 0 = by time only
  checkpoint_every_secs: float = 600.0
  resume: bool = True
  chunk_tokens: int = 1 << 20
  words: tuple = ()
  analogy_restrict: int = 30000
  projector_words: int = 10000

  def __post_init__(self):
    for name, value in resolve(self).items():
      object.__setattr__(self, name, value)

  def check_batch_size(self):
    """Raises UserError above MAX_BATCH_SIZE of the model."""
    limit = MAX_BATCH_SIZE[self.model]
    if self.batch_size > limit:
      raise UserError(f"--batch_size={self.batch_size} is above {limit}, the largest "
                      f"{self.model} batch measured to train without diverging (README, "
                      f"\"Stability on a 21M-token corpus\"): use at most {limit}")

  def check_group_size(self):
    """Raises UserError unless the (resolved) group size divides the batch size."""
    if self.batch_size % self.group_size:
      raise UserError(f"--group_size={self.group_size} must divide --batch_size="
                      f"{self.batch_size} (the batch is cut into groups of examples sharing "
                      "negatives): pick a divisor, e.g. a power of two")

  @property
  def lr(self):
    """The learning rate (resolved: an alias of learning_rate)."""
    return self.learning_rate

  def to_json(self):
    d = dataclasses.asdict(self)
    d["words"] = list(self.words)
    d["resolved_learning_rate"] = self.lr
    return d


# Settings that may change when a run is resumed: they do not change what was learned so
# far (evaluation and logging cadence; more epochs extend the run). Anything else differing
# from the run's config.json is refused once the run has a checkpoint.
FREE_FIELDS = ("model_dir", "resume", "epochs", "eval_examples", "eval_every_epochs",
               "summary_every_secs", "checkpoint_every_steps", "checkpoint_every_secs", "words",
               "analogy_restrict", "projector_words")


def run_dir(model_dir):
  """The RunDir of a word2vec run (training/rundir.py): its config.json is a Config."""
  return rundir_lib.RunDir(model_dir, Config, free=FREE_FIELDS, monotone=("epochs",))


def resolve(config):
  """Decides every default of a word2vec run: the one place they are decided.

  Config calls it when it is built (flags, config.json, benchmarks and tests all build
  Configs), so no other code decides a default. A resolved config resolves to itself.

  Args:
    config: a Config whose unset settings (None, or 0 for the numbers) are still to decide.

  Returns:
    {field: decided value} for the fields that change: loss by the model; num_sampled,
    subtract_log_q and train_biases by the loss; learning_rate, batch_size,
    steps_per_call and group_size by the model; group_size at most batch_size (a group is
    at most one minibatch).
  """
  c = config
  loss = c.loss or DEFAULT_LOSS[c.model]
  decided = {
      "loss": loss,
      "num_sampled": c.num_sampled or DEFAULT_NUM_SAMPLED[loss],
      "subtract_log_q": (DEFAULT_SUBTRACT_LOG_Q[loss] if c.subtract_log_q is None
                         else c.subtract_log_q),
      "train_biases": DEFAULT_TRAIN_BIASES[loss] if c.train_biases is None else c.train_biases,
      "learning_rate": c.learning_rate or DEFAULT_LEARNING_RATE[c.model],
      "batch_size": c.batch_size or DEFAULT_BATCH_SIZE[c.model],
      "steps_per_call": c.steps_per_call or DEFAULT_STEPS_PER_CALL[c.model],
  }
  decided["group_size"] = min(c.group_size or DEFAULT_GROUP_SIZE[c.model],
                              decided["batch_size"])
  return {k: v for k, v in decided.items() if getattr(c, k) != v}
