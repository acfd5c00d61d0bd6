"""Search space of the transformer template for the LLM-free (evolutionary) proposer.

A genome is a flat JSON object with one value per design choice of the recipe:

    norm             "layernorm" | "rmsnorm"                   the block's two normalisations
    mlp              "gelu" | "swiglu" | "relu2"               feed-forward network (relu2: squared ReLU, Primer)
    mlp_ratio        2 | 3 | 4                                 hidden width / d_model (SwiGLU: 2/3 of it, same size)
    parallel         false | true                              attention and MLP in sequence, or side by side (GPT-J)
    schedule         "constant" | "cosine" | "linear"          after the warmup: stay at the peak, or decay to 10%
    warmup           0.01 ... 0.3                              fraction of the steps of linear warmup from 0
    peak_lr          3e-4 ... 1e-2 (log scale)                 AdamW's peak learning rate
    b2               0.95 | 0.99 | 0.999                       AdamW's second-moment decay
    weight_decay     0 ... 0.3                                 on matrices and embeddings only
    label_smoothing  0 ... 0.2                                 of the training targets (the metric is plain bits)

Every member renders (`render`) to a complete recipe.py of the template's contract; the shipped
recipe.py is exactly `render(known()["baseline"])`, and each file in candidates/ is the rendering
of the known member of the same name. Every member has at most as many parameters as the
baseline (mlp_ratio <= 4), so none is refused for its size. Constants are rounded to three
significant digits, so genomes and the code rendered from them stay short.

The proposer calls known(), sample(), mutate(), crossover(), render() and describe() (the interface
base.search_space.SearchSpace); validate() checks a genome that came from elsewhere (a file, a hand edit).
"""

from __future__ import annotations

import json
import random
import textwrap
from typing import Any

from base.search_space import Range, choose_other, mutate_until_changed, round_sig

Genome = dict[str, Any]

# The member of known() that the template ships as its editable file (its baseline).
BASELINE = "baseline"
NOUN = "recipe"  # how ideas name what is evolved
GOAL = "reaches lower held-out bits per character"  # ... and what better means here
CHOICES: dict[str, tuple] = {
    "norm": ("layernorm", "rmsnorm"),
    "mlp": ("gelu", "swiglu", "relu2"),
    "mlp_ratio": (2, 3, 4),
    "parallel": (False, True),
    "schedule": ("constant", "cosine", "linear"),
    "b2": (0.95, 0.99, 0.999),
}
ADDITIVE_SIGMA = 0.2  # as a fraction of the range
LOG_SIGMA = 0.4


def _additive(lo: float, hi: float) -> Range:
    return Range(lo, hi, ADDITIVE_SIGMA * (hi - lo))


# Continuous genes. The learning rate is drawn log-uniformly and perturbed multiplicatively, the others additively.
RANGES: dict[str, Range] = {
    "warmup": _additive(0.01, 0.3),
    "peak_lr": Range(3e-4, 1e-2, LOG_SIGMA, log=True),
    "weight_decay": _additive(0.0, 0.3),
    "label_smoothing": _additive(0.0, 0.2),
}
GENES = (*CHOICES, *RANGES)
FINAL_LR = 0.1  # decaying schedules end at this fraction of the peak (nanoGPT's min_lr)

# ---------------------------------------------------------------- known members


def known() -> dict[str, Genome]:
    """Named members: the baseline and the files in candidates/ (same code), and a few published variants."""
    base: Genome = {"norm": "layernorm", "mlp": "gelu", "mlp_ratio": 4, "parallel": False, "schedule": "constant",
                    "warmup": 0.1, "peak_lr": 0.003, "b2": 0.99, "weight_decay": 0.1, "label_smoothing": 0.0}
    return {
        "baseline": base,
        "rmsnorm": {**base, "norm": "rmsnorm"},
        "swiglu": {**base, "mlp": "swiglu"},
        "cosine": {**base, "schedule": "cosine"},
        "label_smoothing": {**base, "label_smoothing": 0.1},
        # Not in candidates/: Primer's squared ReLU, GPT-J's parallel block, a LLaMA-like combination.
        "primer": {**base, "mlp": "relu2"},
        "parallel": {**base, "parallel": True},
        "llama_like": {**base, "norm": "rmsnorm", "mlp": "swiglu", "schedule": "cosine", "b2": 0.95},
    }


# ---------------------------------------------------------------- validation and variation


def validate(genome: Genome) -> None:
    """Raise ValueError unless `genome` is a well-formed member of the space (every gene, in range)."""
    if not isinstance(genome, dict) or set(genome) != set(GENES):
        keys = sorted(genome) if isinstance(genome, dict) else type(genome).__name__
        raise ValueError(f"a genome has exactly the genes {sorted(GENES)}, not {keys}")
    for gene, options in CHOICES.items():
        if genome[gene] not in options or type(genome[gene]) is not type(options[0]):
            raise ValueError(f"gene {gene!r} must be one of {list(options)}, not {genome[gene]!r}")
    for gene, r in RANGES.items():
        r.check(genome[gene], f"gene {gene!r}")


def _sample_gene(gene: str, rng: random.Random) -> Any:
    if gene in CHOICES:
        return rng.choice(CHOICES[gene])
    return RANGES[gene].draw(rng)


def sample(rng: random.Random) -> Genome:
    """A uniformly random member."""
    return {gene: _sample_gene(gene, rng) for gene in GENES}


def _perturb(gene: str, value: Any, rng: random.Random) -> Any:
    if gene in CHOICES:
        return choose_other(CHOICES[gene], value, rng)
    for _ in range(20):
        new = RANGES[gene].perturb(value, rng)
        if gene == "label_smoothing" and new < 0.01:
            new = 0.0  # "none" stays reachable
        if new != value:
            return new
    return _sample_gene(gene, rng)


def _change_genes(genome: Genome, rng: random.Random) -> Genome:
    child = dict(genome)
    for gene in rng.sample(GENES, 2 if rng.random() < 0.3 else 1):
        child[gene] = _perturb(gene, child[gene], rng)
    return child


def mutate(genome: Genome, rng: random.Random) -> Genome:
    """A copy with one gene changed (sometimes two); the parent is not modified.

    Retries until the genome actually changes (a perturbed number may land back on its value).
    """
    return mutate_until_changed(_change_genes, genome, rng)


def crossover(a: Genome, b: Genome, rng: random.Random) -> Genome:
    """Each gene from one parent or the other, at random."""
    return {gene: (a if rng.random() < 0.5 else b)[gene] for gene in GENES}


# ---------------------------------------------------------------- describe and render


NORMS = {"layernorm": ("LayerNorm", "nn.LayerNorm()"), "rmsnorm": ("RMSNorm", "nn.RMSNorm()")}
MLPS = {"gelu": "GELU", "swiglu": "SwiGLU", "relu2": "squared-ReLU"}


def _pct(x: float) -> str:
    return f"{round_sig(100 * x):g}%"


def describe(genome: Genome) -> str:
    """One line, e.g. "LayerNorm, GELU MLP x4, sequential block; AdamW 0.003 (10% warmup, constant), ..."."""
    g = genome
    decay = {"constant": "constant", "cosine": "cosine decay to 10%", "linear": "linear decay to 10%"}[g["schedule"]]
    loss = f"label smoothing {g['label_smoothing']:g}" if g["label_smoothing"] else "cross-entropy"
    return (f"{NORMS[g['norm']][0]}, {MLPS[g['mlp']]} MLP x{g['mlp_ratio']}, "
            f"{'parallel' if g['parallel'] else 'sequential'} block; AdamW {g['peak_lr']:g} "
            f"({_pct(g['warmup'])} warmup, {decay}), b2 {g['b2']:g}, weight decay {g['weight_decay']:g}; {loss}")


HEADER = '''\
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

{description}
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
'''

MLP_BODIES = {
    "gelu": ('"""Position-wise feed-forward network: GELU, hidden width {r} * d_model."""',
             ["return nn.Dense(self.d_model)(nn.gelu(nn.Dense({r} * self.d_model)(x)))"]),
    "relu2": ('"""Position-wise feed-forward network: squared ReLU (Primer), hidden width {r} * d_model."""',
              ["h = jnp.square(nn.relu(nn.Dense({r} * self.d_model)(x)))",
               "return nn.Dense(self.d_model)(h)"]),
    "swiglu": ('"""Position-wise feed-forward network: SwiGLU (Shazeer, 2020), the size of a GELU MLP of width '
               '{r} * d_model."""',
               ["hidden = 2 * {r} * self.d_model // 3  # three matrices instead of two",
                "h = nn.silu(nn.Dense(hidden)(x)) * nn.Dense(hidden)(x)",
                "return nn.Dense(self.d_model)(h)"]),
}


def _mlp(g: Genome) -> list[str]:
    doc, body = MLP_BODIES[g["mlp"]]
    r = g["mlp_ratio"]
    return ["", "", "class MLP(nn.Module):", f"    {doc.format(r=r)}", "", "    d_model: int", "",
            "    @nn.compact", "    def __call__(self, x):", *("        " + line.format(r=r) for line in body)]


def _block(g: Genome) -> list[str]:
    name, norm = NORMS[g["norm"]]
    attention = "CausalSelfAttention(self.d_model, self.n_heads)"
    if g["parallel"]:
        doc = f"Parallel block (GPT-J): x + attention({name}(x)) + MLP({name}(x)), one shared normalisation."
        body = [f"h = {norm}(x)", f"return x + {attention}(h) + MLP(self.d_model)(h)"]
    else:
        doc = f"Pre-norm block (GPT-2): x + attention({name}(x)), then x + MLP({name}(x))."
        body = [f"x = x + {attention}({norm}(x))", f"return x + MLP(self.d_model)({norm}(x))"]
    return ["", "", "class Block(nn.Module):", f'    """{doc}"""', "", "    d_model: int", "    n_heads: int", "",
            "    @nn.compact", "    def __call__(self, x):", *("        " + line for line in body)]


def _optimizer(g: Genome) -> list[str]:
    lr, end = g["peak_lr"], round_sig(FINAL_LR * g["peak_lr"])
    schedule = {
        "constant": (f"linear warmup over the first {_pct(g['warmup'])} of the steps to {lr:g}, then constant",
                     [f"schedule = optax.linear_schedule(0.0, {lr!r}, warmup)"]),
        "cosine": (f"linear warmup over the first {_pct(g['warmup'])} of the steps to {lr:g}, then cosine decay "
                   f"to {end:g}",
                   [f"schedule = optax.warmup_cosine_decay_schedule(0.0, {lr!r}, warmup, total_steps, "
                    f"end_value={end!r})"]),
        "linear": (f"linear warmup over the first {_pct(g['warmup'])} of the steps to {lr:g}, then linear decay "
                   f"to {end:g}",
                   ["schedule = optax.join_schedules(",
                    f"    [optax.linear_schedule(0.0, {lr!r}, warmup),",
                    f"     optax.linear_schedule({lr!r}, {end!r}, total_steps - warmup)],",
                    "    [warmup],",
                    ")"]),
    }[g["schedule"]]
    doc = ['"""AdamW with gradients clipped at norm 1.', "",
           *textwrap.wrap(f"Learning rate: {schedule[0]}.", width=112), '"""']
    return ["", "", "def optimizer(total_steps):", *("    " + line if line else "" for line in doc),
            f"    warmup = max(1, int({g['warmup']!r} * total_steps))",
            *("    " + line for line in schedule[1]),
            "    return optax.chain(",
            "        optax.clip_by_global_norm(1.0),",
            f"        optax.adamw(schedule, b1=0.9, b2={g['b2']!r}, weight_decay={g['weight_decay']!r}, "
            "mask=_is_matrix),",
            "    )",
            "", "",
            "def _is_matrix(params):",
            '    """Weight decay applies to matrices and embeddings, not to biases and normalisation scales."""',
            "    return jax.tree.map(lambda p: p.ndim >= 2, params)"]


def _loss(g: Genome) -> list[str]:
    eps = g["label_smoothing"]
    if not eps:
        body = ['"""Cross-entropy of the next character."""',
                "return optax.softmax_cross_entropy_with_integer_labels(logits, targets)"]
    else:
        body = [f'"""Cross-entropy against targets smoothed towards the uniform distribution by {eps:g}."""',
                f"labels = optax.smooth_labels(jax.nn.one_hot(targets, logits.shape[-1]), {eps!r})",
                "return optax.softmax_cross_entropy(logits, labels)"]
    return ["", "", "def loss(logits, targets):", *("    " + line for line in body)]


def render(genome: Genome) -> dict[str, str]:
    """The genome as a complete recipe.py, {"recipe.py": source}, with the template's contract."""
    validate(genome)
    description = "\n".join([
        *textwrap.wrap(f"This recipe: {describe(genome)}.", width=110),
        *textwrap.wrap(f"search_space.py genome: {json.dumps(genome)}", width=110, break_long_words=False,
                       break_on_hyphens=False),
    ])
    head = HEADER.format(description=description)
    lines = [*_mlp(genome), *_block(genome), *_optimizer(genome), *_loss(genome)]
    return {"recipe.py": head + "\n".join(lines) + "\n"}
