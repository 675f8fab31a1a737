"""The reference's own training runs, computed once per process in the judge.

Their results set the perplexity band for ``train_epoch`` and give ``predict`` a
trained model to generate from.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Optional

import torch

from grader import refcache
from grader.plugins import reference_hooks
from grader.secret import secret_params
from grader.training import Setup, run_training

#: the seeded training budget every perplexity comparison uses
EPOCHS = 8


def default_setup(corpus: dict, secret: Optional[str] = None) -> Setup:
    """The standard budget; a course's secret seed moves its seed and sizes (see :mod:`grader.secret`)."""
    setup = Setup(corpus=corpus, num_hiddens=64, batch_size=8, num_steps=16, lr=2.0, seed=0)
    return Setup(**secret_params(setup.to_params(), secret))


def reference_training(setup: Setup, epochs: int = EPOCHS, **options) -> dict:
    return _reference_training(json.dumps(setup.to_params(), sort_keys=True), epochs,
                               json.dumps(options, sort_keys=True))


@lru_cache(maxsize=16)
def _reference_training(setup_json: str, epochs: int, options_json: str) -> dict:
    torch.set_num_threads(1)  # also when the run comes from the disk cache: later reference computations rely on it
    return _trained(setup_json, epochs, options_json)


@refcache.cached()
def _trained(setup_json: str, epochs: int, options_json: str) -> dict:
    hooks = reference_hooks()
    setup = Setup(**json.loads(setup_json))
    return run_training(hooks["train_epoch"], hooks, setup, epochs, keep_params=True, **json.loads(options_json))
