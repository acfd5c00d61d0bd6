"""Per-home secrets: the [private] values that make held-out data and hidden rewards.

The rule: every integer in a template's [private] table whose key ends in `_seed` (nested
tables too; their keys are dotted, `a.b_seed`) is a secret. A home draws each one at random
(63 bits) the first time it uses the template, keeps it in its store, and reuses it, so its
runs stay comparable and resumable. Everything else in [private] (sizes such as
`eval_prompts = 512`, fractions, a measured reference) is used as configured.

The values in template.toml are public: anyone who reads the repository knows them. They are
test fixtures only: with SCIENTIST_SECRETS=shipped in the environment, a home's first use of a
template keeps the shipped values instead of drawing (the tests' homes, and the templates'
published figures). The store, not the environment, then decides for that home from there on.

A draw k > 0 replaces every secret by a value derived from (the home's secret, k): fresh
held-out and data draws that no search used, for a campaign's confirmations.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import secrets as _random
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from base.store import Store
    from base.template import Template

SECRET_SUFFIX = "_seed"
BITS = 63                      # SQLite's INTEGER and numpy/JAX seeds take it as it is
ENV = "SCIENTIST_SECRETS"      # "drawn" (the default) or "shipped" (test fixtures, published figures)


class SecretsError(RuntimeError):
    """A home's secrets cannot be resolved; one line for the user (the CLI prints RuntimeErrors so)."""


def secret_keys(private: dict, prefix: str = "") -> dict[str, int]:
    """The secret keys of a [private] table (dotted where nested), each with its shipped value."""
    found: dict[str, int] = {}
    for key, value in private.items():
        if isinstance(value, dict):
            found.update(secret_keys(value, f"{prefix}{key}."))
        elif key.endswith(SECRET_SUFFIX) and isinstance(value, int) and not isinstance(value, bool):
            found[prefix + key] = value
    return found


def derived(secret: int, draw: int) -> int:
    """Draw k's value of a secret: 63 bits of sha256("secret:k"); draw 0 is the secret itself."""
    if draw == 0:
        return secret
    return int.from_bytes(hashlib.sha256(f"{secret}:{draw}".encode()).digest()[:8], "big") >> (64 - BITS)


def resolve_private(private: dict, secrets: dict[str, int], draw: int = 0) -> dict:
    """[private] with every secret key replaced by the home's value (draw 0) or a value derived from it (draw k)."""
    if draw < 0:
        raise SecretsError(f"draw must be 0 or more, not {draw}")
    resolved = copy.deepcopy(private)
    for dotted in secret_keys(private):
        if dotted not in secrets:
            raise SecretsError(f"no secret for [private] {dotted}: the home's secrets were not resolved")
        *parents, leaf = dotted.split(".")
        table = resolved
        for p in parents:
            table = table[p]
        table[leaf] = derived(int(secrets[dotted]), draw)
    return resolved


def home_secrets(store: Store, template: Template) -> dict[str, int]:
    """The home's secrets for this template, drawn (and recorded) on first use.

    Two processes drawing at once end with one value per key: the store keeps the first
    recorded and both read it back. A home whose first draw is a random one retires the runs
    it made before it kept secrets (with the shipped values), so none is reused as if made
    on its own held-out data.
    """
    wanted = secret_keys(template.spec.private)
    if not wanted:
        return {}
    have = store.secrets(template.name)
    missing = {k: v for k, v in wanted.items() if k not in have}
    if missing:
        mode = os.environ.get(ENV, "drawn") or "drawn"
        if mode not in ("drawn", "shipped"):
            raise SecretsError(f"{ENV}={mode!r}: expected 'drawn' or 'shipped'")
        fresh = missing if mode == "shipped" else {k: _random.randbits(BITS) for k in missing}
        have = store.add_secrets(template.name, fresh, retire_runs=mode == "drawn")
    return {k: have[k] for k in wanted}


def digest(private: dict[str, Any]) -> str:
    """A short name for resolved [private] values that reveals nothing of them (for cache folder names)."""
    return hashlib.sha256(json.dumps(private, sort_keys=True).encode()).hexdigest()[:12]
