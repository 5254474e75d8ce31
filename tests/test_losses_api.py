"""The names and signatures other modules import from `losses` stay put."""

import inspect

import pytest

from tf_embeddings import losses

# name -> parameters in order, with defaults where they have one.
API = {
    "sigmoid_cross_entropy_loss": ["pos_logit", "neg_logit"],
    "unsupervised_softmax_cross_entropy_loss": [
        "src_emb", "pos_emb", "neg_emb", ("temperature", 1.0)],
    "in_batch_softmax_loss": ["query_emb", "item_emb", "temperature",
                              ("item_log_q", None), ("item_ids", None),
                              ("query_offset", 0), ("num_hard_negatives", None)],
    "in_batch_softmax_loss_per_item": ["query_emb", "all_item_emb", "item_ids", "temperature",
                                       ("item_q", None)],
    "in_batch_softmax_loss_per_user": ["user_emb", "user_rows", "all_item_emb", "item_ids",
                                       "temperature", ("item_log_q", None)],
    "mixed_negatives_softmax_loss": [
        "query_emb", "item_emb", "sampled_emb", "temperature", ("item_log_q", None),
        ("sampled_log_q", None), ("item_ids", None), ("sampled_ids", None)],
    "info_nce_loss": ["hidden", "temperature", ("hidden_norm", True)],
    "nce_loss": ["weights", "biases", "labels", "inputs", "num_sampled",
                 "num_classes", ("num_true", 1), ("sampler", "log_uniform"),
                 ("unigrams", None), ("distortion", 0.75),
                 ("remove_accidental_hits", False), ("seed", None),
                 ("sampled_values", None)],
    "sampled_softmax_loss": [
        "weights", "biases", "labels", "inputs", "num_sampled",
        "num_classes", ("num_true", 1), ("sampler", "log_uniform"),
        ("unigrams", None), ("distortion", 0.75),
        ("remove_accidental_hits", True), ("seed", None),
        ("sampled_values", None)],
    "full_softmax_loss": ["weights", "biases", "labels", "inputs",
                          ("chunk_size", 65536)],
    "full_sigmoid_loss": ["weights", "biases", "labels", "inputs",
                          ("num_true", 1), ("chunk_size", 65536)],
    "weighted_cross_entropy_loss": ["labels", "logits", "pos_weight"],
    "binary_focal_loss": ["labels", "logits", ("gamma", 2.0), ("alpha", 0.5)],
    "l2_loss": ["labels", "predictions"],
    "jrc_loss": ["labels", "logits", "session_ids", ("alpha", 0.5)],
    "pareto_loss_weights": ["task_losses", "shared_variables", "min_weights"],
    "stable_sigmoid_cross_entropy": ["labels", "logits"],
    "softmax_cross_entropy": ["labels", "logits"],
    "sparse_softmax_cross_entropy": ["labels", "logits"],
    "sample_candidates": ["sampler", "true_classes", "num_true", "num_sampled",
                          "range_max", ("unique", True), ("unigrams", None),
                          ("distortion", 0.75), ("seed", None)],
    "sampler_probabilities": ["sampler", "range_max", ("unigrams", None),
                              ("distortion", 0.75)],
}


@pytest.mark.parametrize("name", sorted(API))
def test_signature(name):
  params = list(inspect.signature(getattr(losses, name)).parameters.values())
  expected = API[name]
  # The documented parameters come first, in order; extras need defaults.
  assert len(params) >= len(expected)
  for param, want in zip(params, expected):
    if isinstance(want, tuple):
      assert (param.name, param.default) == want
    else:
      assert param.name == want and param.default is inspect.Parameter.empty
  for extra in params[len(expected):]:
    assert extra.default is not inspect.Parameter.empty, extra.name
  assert name in losses.__all__


def test_samplers_tuple():
  assert losses.SAMPLERS == ("log_uniform", "unigram", "uniform",
                             "learned_unigram")
