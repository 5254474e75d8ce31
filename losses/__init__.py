"""The loss library: pure TensorFlow losses, samplers and multi-task weights.

Every loss is a function over tensors; reductions are stated in each
docstring (the default is the MEAN over the batch).
"""

from tf_embeddings.losses.multitask import MAX_TASKS
from tf_embeddings.losses.multitask import pareto_loss_weights
from tf_embeddings.losses.multitask import pareto_weights_from_gram
from tf_embeddings.losses.pointwise import binary_focal_loss
from tf_embeddings.losses.pointwise import jrc_loss
from tf_embeddings.losses.pointwise import l2_loss
from tf_embeddings.losses.pointwise import weighted_cross_entropy_loss
from tf_embeddings.losses.primitives import large_negative
from tf_embeddings.losses.primitives import softmax_cross_entropy
from tf_embeddings.losses.primitives import sparse_softmax_cross_entropy
from tf_embeddings.losses.primitives import stable_sigmoid_cross_entropy
from tf_embeddings.losses.retrieval import in_batch_softmax_loss
from tf_embeddings.losses.retrieval import in_batch_softmax_loss_per_item
from tf_embeddings.losses.retrieval import in_batch_softmax_loss_per_user
from tf_embeddings.losses.retrieval import info_nce_loss
from tf_embeddings.losses.retrieval import mixed_negatives_softmax_loss
from tf_embeddings.losses.retrieval import sigmoid_cross_entropy_loss
from tf_embeddings.losses.retrieval import unsupervised_softmax_cross_entropy_loss
from tf_embeddings.losses.sampled import full_sigmoid_loss
from tf_embeddings.losses.sampled import full_softmax_loss
from tf_embeddings.losses.sampled import nce_loss
from tf_embeddings.losses.sampled import sampled_softmax_loss
from tf_embeddings.losses.samplers import SAMPLERS
from tf_embeddings.losses.samplers import sample_candidates
from tf_embeddings.losses.samplers import sampler_probabilities

__all__ = [
    "MAX_TASKS",
    "SAMPLERS",
    "binary_focal_loss",
    "full_sigmoid_loss",
    "full_softmax_loss",
    "in_batch_softmax_loss",
    "in_batch_softmax_loss_per_item",
    "in_batch_softmax_loss_per_user",
    "info_nce_loss",
    "jrc_loss",
    "l2_loss",
    "large_negative",
    "mixed_negatives_softmax_loss",
    "nce_loss",
    "pareto_loss_weights",
    "pareto_weights_from_gram",
    "sample_candidates",
    "sampled_softmax_loss",
    "sampler_probabilities",
    "sigmoid_cross_entropy_loss",
    "softmax_cross_entropy",
    "sparse_softmax_cross_entropy",
    "stable_sigmoid_cross_entropy",
    "unsupervised_softmax_cross_entropy_loss",
    "weighted_cross_entropy_loss",
]
