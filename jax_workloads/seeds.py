"""A JAX key from all the bits of an integer seed.

`jax.random.PRNGKey(seed)` and `jax.random.key(seed)` keep only the low 32 bits of the seed
when 64-bit mode is off (JAX's default): `PRNGKey(2**40 + 3) == PRNGKey(3)`. The evaluators'
secrets (base.secrets) are 63-bit; through PRNGKey they would be 32-bit, few enough to search
for. `seed_key` makes the key 64-bit mode makes, [high word, low word]: for seeds below 2**32
(every value template.toml ships) it is PRNGKey(seed) exactly, so shipped results are unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def seed_key(seed: int) -> jax.Array:
    """A raw threefry key (uint32[2], as PRNGKey returns) from every bit of a non-negative seed below 2**64."""
    if not 0 <= seed < 2**64:
        raise ValueError(f"seed {seed} is not in [0, 2**64)")
    return jnp.array([seed >> 32, seed & 0xFFFFFFFF], dtype=jnp.uint32)


def typed_seed_key(seed: int) -> jax.Array:
    """The same as a typed key (what jax.random.key returns)."""
    return jax.random.wrap_key_data(seed_key(seed))
