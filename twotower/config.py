"""The configuration of a two-tower run: frozen dataclasses and the one `resolve()`.

`resolve(model_dir, **settings)` is where every setting gets its value: the flags
(flags/twotower_flags.py) and the benchmarks call it with what they set, and every other
setting takes the default of its dataclass field below. The resolved `Config` is written as
`config.json` into the model directory (training/rundir.py) and is what `twotower eval`
and `twotower export` read back (`read_config`); `FREE_FIELDS` may differ when a run is
resumed. No TensorFlow here: `twotower --help` imports this module.
"""
import dataclasses
import typing

from tf_embeddings.data.errors import UserError
from tf_embeddings.training import rundir as rundir_lib

LOSSES = ("inbatch_softmax", "bce", "sampled_softmax", "info_nce", "weighted_ce", "focal",
          "jrc")
POINTWISE_LOSSES = ("weighted_ce", "focal", "jrc")
DATASETS = ("movielens-100k", "movielens-1m", "synthetic", "csv")
SPLITS = ("random", "leave_last_out")


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Where interactions come from and how they are split."""
  dataset: str = "movielens-100k"
  data_dir: str = ""
  data_path: str = ""
  user_column: str = "user_id"
  item_column: str = "item_id"
  label_column: str = ""
  timestamp_column: str = ""
  session_column: str = ""
  user_feature_columns: tuple = ()
  item_feature_columns: tuple = ()
  split: str = "random"
  test_fraction: float = 0.2
  split_seed: int = 42
  validation_fraction: float = 0.0
  min_rating: float = None
  # Share of users whose interactions are all held out of training (cold users, scored
  # through the out-of-vocabulary user id and their side features).
  cold_users: float = 0.0


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Tower architecture."""
  # Runs recorded before these fields existed were built without them.
  LEGACY_DEFAULTS: typing.ClassVar[dict] = {"user_oov": False, "ensemble": 1}
  # 48 since 2026-12-02 (fifth session; was 32): with the train defaults below, chosen
  # together on the validation split (README, "How the defaults were chosen").
  embedding_dim: int = 48
  tower_layers: tuple = (64,)
  use_ids: bool = True
  use_features: bool = True
  use_history: bool = False
  item_bias: bool = False
  normalize: bool = True
  seed: int = 0
  # One more row in the user id table for ids unseen at training time (the export serves
  # them through their side features; --id_dropout trains it).
  user_oov: bool = True
  # Members of an ensemble: this many towers in each tower, each from its own initial
  # values and trained with its own loss on the same batches; a tower's output is its
  # members' outputs side by side, divided by sqrt(ensemble), so a score is the mean of the
  # members' scores (1: one pair of towers). 3 since 2026-12-02 (sixth session): validation
  # split, 3 seeds, sum of hit@1..100 1.211 against 1.201 with 1, for 1.75x the training
  # time (README, "How the defaults were chosen"). Runs recorded before it existed: 1.
  ensemble: int = 3


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Loss, optimiser and schedule."""
  # Runs recorded before these fields existed trained without them: they resume so
  # (training.rundir.config_from_dict), and a new default never changes a recorded run.
  LEGACY_DEFAULTS: typing.ClassVar[dict] = {"weight_decay": 0.0, "average_momentum": 0.0,
                                            "id_dropout": 0.0, "logq_weight": 1.0}
  loss: str = "inbatch_softmax"
  # Temperature, logq_weight, batch_size and epochs were chosen together on the validation
  # split (2026-12-02, fifth session: a random search of 57 settings, then 3 seeds; sum of
  # hit@1..100 1.202 against 1.190 for the previous 0.1 / 1.1 / 256 / 12 with dim 32).
  temperature: float = 0.08
  logq_correction: bool = True
  # The logQ correction subtracts logq_weight * log Q(item) (1: the textbook correction).
  # Validation split, seed 0 (sum of hit@1..100), the earlier defaults: 1.0 -> 1.172, 1.1 ->
  # 1.194, 1.25 -> 1.187, 1.35 -> 1.192 (README); 1.2 with the settings above and below.
  # Before 2026-12-02 (second session) the default was 1.0: runs recorded without the
  # field resume with it.
  logq_weight: float = 1.2
  remove_accidental_hits: bool = True
  mixed_negatives: int = 0
  num_hard_negatives: int = 0
  num_negatives: int = 4
  negative_sampler: str = "popularity"
  pos_weight: float = 1.0
  focal_gamma: float = 2.0
  focal_alpha: float = 0.5
  jrc_alpha: float = 0.5
  optimizer: str = "adam"
  learning_rate: float = 0.01
  weight_decay: float = 0.1
  average_momentum: float = 0.999
  final_learning_rate_fraction: float = 0.1
  batch_size: int = 512
  epochs: int = 16
  seed: int = 0
  checkpoint_every: int = 500
  log_every: int = 50
  eval_every_epoch: bool = True
  # Evaluations during training score at most this many users of the split (a seeded
  # sample, the same each time; 0 = all); the one after the last epoch scores all of them.
  eval_users: int = 10000
  include_seen: bool = False
  jit_compile: bool = False
  # Multi-task: two or more heads (names of LOSSES) over the same towers. Off when empty.
  tasks: tuple = ()
  task_weights: tuple = ()
  pareto_min_weights: tuple = ()
  pareto_every: int = 1
  # Probability that a training query's user id is replaced by the out-of-vocabulary id.
  id_dropout: float = 0.0


@dataclasses.dataclass(frozen=True)
class Config:
  model_dir: str
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  train: TrainConfig = TrainConfig()


# The flag of a config field where it is not the field's name (`resolve` takes flag names).
FLAG_NAMES = {"model.seed": "model_seed"}
_SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
# Fields that hold tuples (flags and JSON give lists).
_TUPLES = ("data.user_feature_columns", "data.item_feature_columns", "model.tower_layers",
           "train.tasks", "train.task_weights", "train.pareto_min_weights")
_FLOAT_TUPLES = ("train.task_weights", "train.pareto_min_weights")


def task_names(train_config):
  """The heads a run trains: --tasks, or the one --loss."""
  return train_config.tasks or (train_config.loss,)


def labelled(train_config):
  """Whether a head trains on 0/1 labels (the data is then prepared with them)."""
  return any(name in POINTWISE_LOSSES for name in task_names(train_config))


def tasks_problem(tasks, task_weights=(), pareto_min_weights=()):
  """What is wrong with these multi-task settings (one line), or None.

  Args:
    tasks: sequence of loss names (empty: one task, --loss).
    task_weights: sequence of fixed weights (numbers or strings), or empty.
    pareto_min_weights: sequence of PE-LTR minimum weights, or empty.
  """
  tasks = list(tasks)
  if not tasks:
    if task_weights or pareto_min_weights:
      return "--task_weights and --pareto_min_weights need --tasks (two or more heads)"
    return None
  unknown = [name for name in tasks if name not in LOSSES]
  if unknown:
    return (f"unknown task {unknown[0]!r} in --tasks: the tasks are the losses "
            f"{', '.join(LOSSES)}")
  if len(tasks) < 2:
    return f"--tasks names two or more heads, got {tasks[0]} alone: use --loss={tasks[0]}"
  if len(set(tasks)) != len(tasks):
    return f"--tasks names a head twice: {','.join(tasks)}"
  if task_weights and pareto_min_weights:
    return ("--task_weights (fixed) and --pareto_min_weights (Pareto weights) exclude each "
            "other: pass one")
  for flag, values in (("--task_weights", task_weights),
                       ("--pareto_min_weights", pareto_min_weights)):
    if not values:
      continue
    try:
      numbers = [float(v) for v in values]
    except ValueError:
      return f"{flag} must be numbers, got {','.join(str(v) for v in values)}"
    if len(numbers) != len(tasks):
      return (f"{flag} has {len(numbers)} values for the {len(tasks)} tasks "
              f"{','.join(tasks)}")
    if any(not v >= 0 for v in numbers):
      return f"{flag} must be >= 0, got {','.join(str(v) for v in values)}"
    if flag == "--task_weights" and not sum(numbers) > 0:
      return "--task_weights are all 0: give a head a positive weight"
    if flag == "--pareto_min_weights" and sum(numbers) > 1 + 1e-9:
      return (f"--pareto_min_weights sum to {sum(numbers):.6g} > 1: the Pareto weights sum "
              "to 1, so their minimums must sum to at most 1")
  return None


def flag_name(key):
  """The flag of a dotted config field, e.g. "model.seed" -> "model_seed"."""
  return FLAG_NAMES.get(key, key.rsplit(".", 1)[-1])


def setting_names():
  """{flag name: dotted config field} of every setting `resolve` takes."""
  return {flag_name(f"{section}.{f.name}"): f"{section}.{f.name}"
          for section, cls in _SECTIONS.items() for f in dataclasses.fields(cls)}


def resolve(model_dir, **settings):
  """The `Config` of a run: the given settings, and every other one at its default.

  Args:
    model_dir: the run directory.
    **settings: by flag name (`setting_names()`: `loss="bce"`, `tower_layers=[64, 32]`,
      `model_seed=3`, ...); lists become tuples, tower widths ints.

  Returns:
    The frozen `Config` (what config.json records).

  Raises:
    TypeError: a name that is no setting (a programming error, not a user's).
    UserError: settings that cannot go together (the flags refuse them first).
  """
  names = setting_names()
  unknown = sorted(set(settings) - set(names))
  if unknown:
    raise TypeError(f"resolve() got unknown settings: {', '.join(unknown)}")
  sections = {section: {} for section in _SECTIONS}
  for name, value in settings.items():
    key = names[name]
    if key in _TUPLES:
      value = tuple(int(v) for v in value) if key == "model.tower_layers" else tuple(value)
    if key in _FLOAT_TUPLES:
      problem = tasks_problem(settings.get("tasks", ()), settings.get("task_weights", ()),
                              settings.get("pareto_min_weights", ()))
      if problem:
        raise UserError(problem)
      value = tuple(float(v) for v in value)
    section, field = key.split(".")
    sections[section][field] = value
  train = sections["train"]
  if train.get("tasks"):
    # With --tasks, --loss is the first task; fixed weights default to equal ones that sum
    # to 1, as the Pareto weights do.
    train["loss"] = train["tasks"][0]
    if not train.get("task_weights") and not train.get("pareto_min_weights"):
      train["task_weights"] = (1.0 / len(train["tasks"]),) * len(train["tasks"])
  config = Config(model_dir=model_dir, **{section: _SECTIONS[section](**values)
                                          for section, values in sections.items()})
  _check(config)
  return config


def _check(config):
  """The constraints between settings (also flag validators, so they fail before here)."""
  d, m, t = config.data, config.model, config.train
  if t.temperature <= 0:
    raise UserError("--temperature must be > 0 (logits are divided by it)")
  if d.dataset == "csv" and not d.data_path:
    raise UserError("--dataset=csv needs --data_path=<file.csv or .tsv>")
  problem = tasks_problem(t.tasks, t.task_weights, t.pareto_min_weights)
  if problem:
    raise UserError(problem)
  if t.pareto_every < 1:
    raise UserError("--pareto_every must be >= 1")
  if t.pareto_min_weights and t.jit_compile:
    raise UserError("--pareto_min_weights does not run under --jit_compile (XLA does not "
                    "compile the weights' solver): leave --jit_compile off")
  if m.use_history and t.jit_compile:
    raise UserError("--use_history does not run under --jit_compile (each user's history "
                    "has its own length; XLA needs static shapes): leave --jit_compile off")
  if t.mixed_negatives and "inbatch_softmax" not in task_names(t):
    raise UserError("--mixed_negatives needs --loss=inbatch_softmax")
  if t.logq_weight < 0:
    raise UserError("--logq_weight must be >= 0 (0 = no correction)")
  if t.num_hard_negatives < 0:
    raise UserError("--num_hard_negatives must be >= 0 (0 = every in-batch negative)")
  if t.num_hard_negatives and "inbatch_softmax" not in task_names(t):
    raise UserError("--num_hard_negatives needs --loss=inbatch_softmax")
  if t.num_hard_negatives and t.mixed_negatives:
    raise UserError("--num_hard_negatives does not combine with --mixed_negatives: use one")
  if t.weight_decay and t.optimizer not in ("adam", "lazy_adam"):
    raise UserError("--weight_decay needs --optimizer=adam or lazy_adam (it is AdamW's "
                    "decoupled decay)")
  if m.ensemble < 1:
    raise UserError("--ensemble must be >= 1 (1 = one pair of towers)")
  if not (m.use_ids or m.use_features):
    raise UserError("the towers need an input: --use_ids or --use_features")
  if not 0.0 <= t.id_dropout <= 1.0:
    raise UserError("--id_dropout is a probability: 0 <= p <= 1")
  if t.id_dropout and not (m.user_oov and m.use_ids):
    raise UserError("--id_dropout needs --user_oov and --use_ids (it replaces user ids by "
                    "the out-of-vocabulary id)")
  if not 0.0 <= d.cold_users < 1.0:
    raise UserError("--cold_users is a share of users: 0 <= f < 1")
  if d.cold_users and m.use_ids and not m.user_oov:
    raise UserError("--cold_users needs --user_oov (cold users are scored through the "
                    "out-of-vocabulary user id)")


# Settings that may change when a run is resumed (they do not change what was learned so
# far: cadences, evaluation settings, where the data files are; more epochs extend the run).
FREE_FIELDS = ("model_dir", "data.data_dir", "train.epochs", "train.checkpoint_every",
               "train.log_every", "train.eval_every_epoch", "train.include_seen",
               "train.eval_users")


def run_dir(model_dir):
  """The `training.rundir.RunDir` of a two-tower run."""
  return rundir_lib.RunDir(model_dir, Config, free=FREE_FIELDS, monotone=("train.epochs",),
                           flag_name=flag_name)


def read_config(model_dir):
  """The `Config` of a run directory (UserError if there is none)."""
  return run_dir(model_dir).load_config(
      what="two-tower run", hint="train first with `twotower train --model_dir=...`")
