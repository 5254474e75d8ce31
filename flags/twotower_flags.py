"""Flags of the `twotower` app: definitions, validators, flags -> Config."""
from absl import flags

from tf_embeddings.flags import cluster_flags
from tf_embeddings.twotower import config as config_lib

ACTIONS = ("train", "eval", "export", "server")
# The strategies twotower implements (training/distribute.py).
STRATEGIES = ("default", "parameter_server", "multi_worker", "mirrored")


def define_twotower_flags():
  """Defines every twotower flag (call once, before app.run)."""
  d = config_lib.DataConfig()
  m = config_lib.ModelConfig()
  t = config_lib.TrainConfig()
  cluster_flags.define_cluster_flags()
  # Run directory and actions.
  flags.DEFINE_string("model_dir", None, "Run directory: config, checkpoints, summaries.")
  flags.DEFINE_bool("resume", True, "Continue from the last checkpoint of --model_dir; "
                    "false starts over.")
  flags.DEFINE_string("output", None, "export: output directory.")
  flags.DEFINE_bool("overwrite", False, "export: replace an existing --output (as a whole: "
                    "the new export is built beside it and renamed over it).")
  flags.DEFINE_integer("top_k", 100, "export: number of items the query model returns.",
                       lower_bound=1)
  flags.DEFINE_enum("eval_split", "test", ["test", "validation"], "eval: which split.")
  # Data.
  flags.DEFINE_enum("dataset", d.dataset, list(config_lib.DATASETS),
                    "Interactions: MovieLens (fetched and cached), synthetic, or csv "
                    "(--data_path).")
  flags.DEFINE_string("data_dir", d.data_dir, "Local MovieLens directory (u.data, "
                      "ratings.dat or RecBole .inter/.item/.user); default: fetch and cache.")
  flags.DEFINE_string("data_path", d.data_path, "--dataset=csv: the CSV/TSV file.")
  flags.DEFINE_string("user_column", d.user_column, "csv: user id column.")
  flags.DEFINE_string("item_column", d.item_column, "csv: item id column.")
  flags.DEFINE_string("label_column", d.label_column, "csv: rating/label column (optional).")
  flags.DEFINE_string("timestamp_column", d.timestamp_column, "csv: timestamp column.")
  flags.DEFINE_string("session_column", d.session_column, "csv: session id column (jrc).")
  flags.DEFINE_list("user_feature_columns", list(d.user_feature_columns),
                    "csv: user side-feature columns.")
  flags.DEFINE_list("item_feature_columns", list(d.item_feature_columns),
                    "csv: item side-feature columns.")
  flags.DEFINE_enum("split", d.split, list(config_lib.SPLITS),
                    "random: seeded 80/20 (TFRS tutorial); leave_last_out: last "
                    "interaction of each user by time.")
  flags.DEFINE_float("test_fraction", d.test_fraction, "random split: test share.",
                     lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_integer("split_seed", d.split_seed, "random split seed.")
  flags.DEFINE_float("validation_fraction", d.validation_fraction,
                     "Carve a validation split from train (same protocol) and evaluate on "
                     "it during training; 0 = evaluate on the test split.",
                     lower_bound=0.0, upper_bound=0.9)
  flags.DEFINE_float("min_rating", d.min_rating, "Ratings >= this are positives (others "
                     "dropped, or labelled 0 for pointwise losses); default: every "
                     "interaction is a positive.")
  # Model.
  flags.DEFINE_integer("embedding_dim", m.embedding_dim, "Output size of both towers.",
                       lower_bound=1)
  flags.DEFINE_list("tower_layers", [str(x) for x in m.tower_layers],
                    "Hidden MLP widths of each tower (empty: one linear layer, or the id "
                    "embedding itself without features).")
  flags.DEFINE_bool("use_ids", m.use_ids, "Embed user and item ids.")
  flags.DEFINE_bool("use_features", m.use_features, "Embed side features (MovieLens: age, "
                    "gender, occupation; genres, year, title words).")
  flags.DEFINE_bool("use_history", m.use_history, "Query tower also mean-pools the user's "
                    "training items (the positive left out in training), YouTube-DNN style.")
  flags.DEFINE_bool("item_bias", m.item_bias, "Add a learned item bias to the dot product "
                    "(one extra embedding coordinate).")
  flags.DEFINE_bool("normalize", m.normalize, "L2-normalise both towers' outputs (cosine "
                    "scores / temperature); --nonormalize: raw dot products.")
  flags.DEFINE_integer("ensemble", m.ensemble, "Members per tower, each from its own "
                       "initial values and trained with its own loss on the same batches; "
                       "the embeddings are theirs side by side (--embedding_dim x N wide), "
                       "a score the mean of theirs (1: one pair of towers; 3 trains in "
                       "about 1.75x the time of 1).", lower_bound=1)
  flags.DEFINE_integer("model_seed", m.seed, "Initialisation seed.")
  # Training.
  flags.DEFINE_enum("loss", t.loss, list(config_lib.LOSSES), "Training loss.")
  flags.DEFINE_float("temperature", t.temperature, "Logits = cosine / temperature (> 0).")
  flags.DEFINE_float("logq_weight", t.logq_weight,
                     "The logQ correction subtracts this times log Q(item) (1 = the textbook "
                     "correction; above 1 pushes popular items down harder).",
                     lower_bound=0.0)
  flags.DEFINE_bool("logq_correction", t.logq_correction,
                    "inbatch_softmax: subtract log item frequency (training stream).")
  flags.DEFINE_bool("remove_accidental_hits", t.remove_accidental_hits,
                    "inbatch/sampled softmax: drop negatives equal to the positive.")
  flags.DEFINE_integer("num_negatives", t.num_negatives,
                       "bce: negatives per positive; sampled_softmax: per batch.",
                       lower_bound=1)
  flags.DEFINE_integer("mixed_negatives", t.mixed_negatives,
                       "inbatch_softmax: also score every query against this many items drawn "
                       "uniformly per step (mixed negative sampling); 0 = in-batch only.",
                       lower_bound=0)
  flags.DEFINE_integer("num_hard_negatives", t.num_hard_negatives,
                       "inbatch_softmax: each query's softmax keeps only its positive and its "
                       "N highest-scoring in-batch negatives (TFRS num_hard_negatives); "
                       "0 = every in-batch negative.", lower_bound=0)
  flags.DEFINE_enum("negative_sampler", t.negative_sampler, ["uniform", "popularity"],
                    "bce/sampled_softmax negatives: uniform or popularity^0.75.")
  flags.DEFINE_float("pos_weight", t.pos_weight, "weighted_ce: weight of positives.",
                     lower_bound=0.0)
  flags.DEFINE_float("focal_gamma", t.focal_gamma, "focal: gamma.", lower_bound=0.0)
  flags.DEFINE_float("focal_alpha", t.focal_alpha, "focal: alpha.", lower_bound=0.0,
                     upper_bound=1.0)
  flags.DEFINE_float("jrc_alpha", t.jrc_alpha, "jrc: weight of the calibration term.",
                     lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_enum("optimizer", t.optimizer, ["adam", "lazy_adam", "adagrad", "sgd"],
                    "Optimiser. lazy_adam: Adam(W) whose sparse (embedding-table) updates "
                    "touch only the rows of the batch, for tables too big to rewrite every "
                    "step (parameter servers; training/lazy_adam.py).")
  flags.DEFINE_float("learning_rate", t.learning_rate, "Initial learning rate.",
                     lower_bound=0.0)
  flags.DEFINE_float("final_learning_rate_fraction", t.final_learning_rate_fraction,
                     "The LR decays linearly to this fraction of --learning_rate.",
                     lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_float("weight_decay", t.weight_decay, "Decoupled weight decay (AdamW; "
                     "--optimizer=adam or lazy_adam): variables shrink by lr * this per step "
                     "(lazy_adam: the rows of a table a step touches).",
                     lower_bound=0.0)
  flags.DEFINE_float("average_momentum", t.average_momentum,
                     "Exponential moving average of the weights (Polyak averaging) used for "
                     "evaluation and kept at the end of training; 0 = off.",
                     lower_bound=0.0, upper_bound=0.999999)
  flags.DEFINE_integer("batch_size", t.batch_size, "Examples per step.", lower_bound=2)
  flags.DEFINE_integer("epochs", t.epochs, "Passes over the training split.", lower_bound=1)
  flags.DEFINE_integer("seed", t.seed, "Shuffle and sampling seed.")
  flags.DEFINE_integer("checkpoint_every", t.checkpoint_every, "Checkpoint every N steps.",
                       lower_bound=1)
  flags.DEFINE_integer("log_every", t.log_every, "Summaries every N steps.", lower_bound=1)
  flags.DEFINE_bool("eval_every_epoch", t.eval_every_epoch,
                    "Full-corpus eval after each epoch (TensorBoard eval/*).")
  flags.DEFINE_integer("eval_users", t.eval_users,
                       "Evaluations during training score a fixed seeded sample of at most "
                       "this many users of the split (TensorBoard eval_sampled/* when it is "
                       "smaller than the split); the last one, all of them (eval/*). "
                       "0 = all users every time. `twotower eval` scores all users unless "
                       "this flag is given.", lower_bound=0)
  flags.DEFINE_bool("include_seen", t.include_seen,
                    "Keep each user's training items in the ranking (as TFRS "
                    "FactorizedTopK does); default: excluded.")
  flags.DEFINE_bool("jit_compile", t.jit_compile, "XLA-compile the train step.")
  # Multi-task.
  flags.DEFINE_list("tasks", list(t.tasks),
                    "Multi-task: two or more heads over the same towers, named by their "
                    f"losses ({', '.join(config_lib.LOSSES)}), e.g. inbatch_softmax,"
                    "weighted_ce. Retrieval heads train on every interaction, pointwise heads "
                    "(weighted_ce, focal, jrc) on the label (rating >= --min_rating). The "
                    "loss is sum_k w_k L_k; --loss is the first task. Empty: one head, --loss.")
  flags.DEFINE_list("task_weights", list(t.task_weights),
                    "--tasks: fixed weight of each head (default: equal, summing to 1).")
  flags.DEFINE_list("pareto_min_weights", list(t.pareto_min_weights),
                    "--tasks: switch on the Pareto-efficient weights (PE-LTR, TorchEasyRec's "
                    "use_pareto_loss_weight), with these minimum weights per head (sum <= 1); "
                    "the weights sum to 1 and are recomputed every --pareto_every steps.")
  flags.DEFINE_integer("pareto_every", t.pareto_every,
                       "--pareto_min_weights: recompute the weights from the heads' gradients "
                       "every N steps (each recompute costs one backward pass per head).",
                       lower_bound=1)
  # Cold start: users unseen at training time.
  flags.DEFINE_bool("user_oov", m.user_oov, "One out-of-vocabulary row in the user id table: "
                    "the export's serve_with_features serves unknown user ids through it and "
                    "their side features.")
  flags.DEFINE_float("id_dropout", t.id_dropout, "Training: replace each query's user id by "
                     "the out-of-vocabulary id with this probability (the tower learns to "
                     "rely on side features for new users).", lower_bound=0.0, upper_bound=1.0)
  flags.DEFINE_float("cold_users", d.cold_users, "Hold every interaction of this share of "
                     "users out of training; evaluation scores them (cold users) through the "
                     "out-of-vocabulary id and their side features, beside most-popular.",
                     lower_bound=0.0, upper_bound=0.9)

  flags.register_validator("temperature", lambda v: v > 0,
                           message="--temperature must be > 0 (logits are divided by it)")
  flags.register_validator("tower_layers", _positive_ints,
                           message="--tower_layers must be positive integers, e.g. 64,32")
  flags.register_multi_flags_validator(
      ["dataset", "data_path"], lambda f: f["dataset"] != "csv" or bool(f["data_path"]),
      message="--dataset=csv needs --data_path=<file.csv or .tsv>")
  flags.register_multi_flags_validator(
      ["mixed_negatives", "loss"], lambda f: not f["mixed_negatives"]
      or f["loss"] == "inbatch_softmax",
      message="--mixed_negatives needs --loss=inbatch_softmax")
  flags.register_multi_flags_validator(
      ["weight_decay", "optimizer"],
      lambda f: not f["weight_decay"] or f["optimizer"] in ("adam", "lazy_adam"),
      message="--weight_decay needs --optimizer=adam or lazy_adam (it is AdamW's decoupled "
      "decay)")
  flags.register_multi_flags_validator(
      ["tasks", "task_weights", "pareto_min_weights"], _tasks_valid,
      message="invalid --tasks / --task_weights / --pareto_min_weights")
  flags.register_multi_flags_validator(
      ["use_ids", "use_features"], lambda f: f["use_ids"] or f["use_features"],
      message="the towers need an input: --use_ids or --use_features")
  flags.register_multi_flags_validator(
      ["id_dropout", "user_oov", "use_ids"], lambda f: not f["id_dropout"]
      or (f["user_oov"] and f["use_ids"]),
      message="--id_dropout needs --user_oov and --use_ids (it replaces user ids by the "
      "out-of-vocabulary id)")


def _tasks_valid(f):
  problem = config_lib.tasks_problem(f["tasks"] or (), f["task_weights"] or (),
                                     f["pareto_min_weights"] or ())
  if problem:
    raise flags.ValidationError(problem)
  return True


def _positive_ints(values):
  try:
    return all(int(v) > 0 for v in values)
  except ValueError:
    return False


def config_from_flags(f):
  """The resolved `Config` of parsed flags (`twotower.config.resolve`)."""
  return config_lib.resolve(f.model_dir, **{name: f[name].value
                                            for name in config_lib.setting_names()})
