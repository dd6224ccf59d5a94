"""The packed scorer's sizes (:mod:`lawlab_plugins._lm_scorer`), in a module without torch so
that the lm-eval evaluator's memory terms read them cheaply and neither module imports the other.

Vocabulary logits alive at once bound the head's memory (about 64 MB in float32); tokens per
forward pass count per unit of ``batch_size``, since a packed row holds several requests
(HFLM's ``batch_size`` counts whole sequences).
"""

LOGIT_ELEMENTS = 1 << 24
TOKENS_PER_BATCH_ROW = 128
