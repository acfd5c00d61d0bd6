"""The editable recipe of the `transformer` template: the GPT's block, its optimizer and its training loss.

Contract (the harness checks it on tiny inputs before training):

- `Block(d_model, n_heads)`: a flax.linen Module mapping x [batch, time, d_model] to the same shape. The
  fixed model (jax_workloads/transformer.py) is: token + position embeddings, n_layers Blocks, a final
  LayerNorm and a linear head. A Block must be causal (position t may use positions <= t only) and keep
  the examples of a batch apart; the whole model may have at most `max_params` parameters (template.toml).
- `optimizer(total_steps)`: an optax GradientTransformation; called once with the number of training steps.
- `loss(logits, targets)`: the training loss at each position, shape [batch, time], from logits
  [batch, time, vocab] and targets [batch, time] (int32 character ids). The harness minimises its mean.

Whatever `loss` says, the sealed metric is the held-out cross-entropy in bits per character, computed by
the evaluator from the exported model.

This recipe: RMSNorm, GELU MLP x4, sequential block; AdamW 0.003 (10% warmup, constant), b2 0.99, weight decay
0.1; cross-entropy.
search_space.py genome: {"norm": "rmsnorm", "mlp": "gelu", "mlp_ratio": 4, "parallel": false, "schedule":
"constant", "warmup": 0.1, "peak_lr": 0.003, "b2": 0.99, "weight_decay": 0.1, "label_smoothing": 0.0}
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t attends only to positions <= t."""

    d_model: int
    n_heads: int

    @nn.compact
    def __call__(self, x):
        b, t, d = x.shape
        h = self.n_heads
        q, k, v = jnp.split(nn.Dense(3 * d)(x), 3, axis=-1)
        q, k, v = (z.reshape(b, t, h, d // h) for z in (q, k, v))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(d // h)
        scores = jnp.where(jnp.tril(jnp.ones((t, t), bool)), scores, -jnp.inf)  # the causal mask
        y = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, axis=-1), v)
        return nn.Dense(d)(y.reshape(b, t, d))


class MLP(nn.Module):
    """Position-wise feed-forward network: GELU, hidden width 4 * d_model."""

    d_model: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.d_model)(nn.gelu(nn.Dense(4 * self.d_model)(x)))


class Block(nn.Module):
    """Pre-norm block (GPT-2): x + attention(RMSNorm(x)), then x + MLP(RMSNorm(x))."""

    d_model: int
    n_heads: int

    @nn.compact
    def __call__(self, x):
        x = x + CausalSelfAttention(self.d_model, self.n_heads)(nn.RMSNorm()(x))
        return x + MLP(self.d_model)(nn.RMSNorm()(x))


def optimizer(total_steps):
    """AdamW with gradients clipped at norm 1.

    Learning rate: linear warmup over the first 10% of the steps to 0.003, then constant.
    """
    warmup = max(1, int(0.1 * total_steps))
    schedule = optax.linear_schedule(0.0, 0.003, warmup)
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(schedule, b1=0.9, b2=0.99, weight_decay=0.1, mask=_is_matrix),
    )


def _is_matrix(params):
    """Weight decay applies to matrices and embeddings, not to biases and normalisation scales."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def loss(logits, targets):
    """Cross-entropy of the next character."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets)
