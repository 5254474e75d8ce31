"""Frozen configuration of a two-tower run, built once from flags.

The resolved `Config` is written as `config.json` into the model directory
(training/rundir.py); `twotower eval` and `twotower export` rebuild the data and the towers
from it. What may differ when a run is resumed: twotower/train.py's FREE_FIELDS.
"""
import dataclasses
import typing

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


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Tower architecture."""
  embedding_dim: int = 32
  tower_layers: tuple = (64,)
  use_ids: bool = True
  use_features: bool = True
  use_history: bool = False
  item_bias: bool = False
  normalize: bool = True
  seed: int = 0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """Loss, optimiser and schedule."""
  # Runs recorded before these fields existed trained without them: they resume so
  # (training.rundir.config_from_dict), and a new default never changes a recorded run.
  LEGACY_DEFAULTS: typing.ClassVar[dict] = {"weight_decay": 0.0, "average_momentum": 0.0}
  loss: str = "inbatch_softmax"
  temperature: float = 0.1
  logq_correction: bool = True
  remove_accidental_hits: bool = True
  mixed_negatives: int = 0
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
  batch_size: int = 256
  epochs: int = 12
  seed: int = 0
  checkpoint_every: int = 500
  log_every: int = 50
  eval_every_epoch: bool = True
  include_seen: bool = False
  jit_compile: bool = False


@dataclasses.dataclass(frozen=True)
class Config:
  model_dir: str
  data: DataConfig = DataConfig()
  model: ModelConfig = ModelConfig()
  train: TrainConfig = TrainConfig()
