"""A course's secret seed: generated inputs that a student cannot compute at home.

Every check draws its inputs from seeds and sizes in its probe's parameters. Without a secret they are
the published defaults, so a student with the reference could compute the expected results at home
and have a submission send them back. With a secret (``grade --secret-seed``, or the environment
variable ``GRADER_SECRET_SEED``), every seed, and the sizes that shape the results, are derived from
it and from the submission's own files (:func:`submission_secret`): the same submission gets the same
inputs (grades stay deterministic); another secret, or another submission, gets other inputs.
"""

from __future__ import annotations

import hashlib
from typing import Any, Mapping, Optional

#: environment variable that holds the secret, so that it stays out of command lines
SECRET_ENV = "GRADER_SECRET_SEED"
#: parameter names that are sizes of generated inputs; a secret grows each by 1 to SIZE_SPREAD (sizes of 1
#: stay 1), so that no result of the published inputs, not even a shape, is a result of the secret ones
#: (and another submission's shapes match by chance once in SIZE_SPREAD per size at most)
SIZE_SPREAD = 8
SIZE_KEYS = frozenset({"num_hiddens", "hidden_dim", "batch_size", "batch", "num_steps", "steps"})


def _draw(secret: str, label: str, value: int) -> int:
    digest = hashlib.sha256(f"{secret}\0{label}\0{value}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "little")


def submission_secret(secret: str, files: Mapping[str, str]) -> str:
    """The secret one submission's inputs are drawn from: the course's, mixed with the submission's files.

    The same submission always gets the same inputs (the same grade); inputs that one submission
    printed into its report are not those of the next, so they cannot be worked out at home either.
    """
    digest = hashlib.sha256(secret.encode("utf-8"))
    for name in sorted(files):
        for part in (name, files[name]):
            data = part.encode("utf-8", "surrogateescape")
            digest.update(len(data).to_bytes(8, "little") + data)
    return digest.hexdigest()


def secret_seed(secret: Optional[str], seed: int, label: str = "seed") -> int:
    """``seed`` itself without a secret; otherwise a seed derived from the secret and ``seed``."""
    return seed if not secret else _draw(secret, label, seed) % (2 ** 31)


def secret_params(params: Any, secret: Optional[str]) -> Any:
    """A copy of ``params`` whose ``seed`` values and input sizes are derived from the secret.

    Without a secret, ``params`` is returned unchanged (the published defaults).
    """
    if not secret:
        return params

    def walk(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, key) for v in value]
        if isinstance(value, bool) or not isinstance(value, int):
            return value
        if key == "seed" or key.endswith("_seed"):
            return secret_seed(secret, value)
        if key in SIZE_KEYS and value >= 2:
            return value + 1 + _draw(secret, key, value) % SIZE_SPREAD
        return value

    return walk(params)
