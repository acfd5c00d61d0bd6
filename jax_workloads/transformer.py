"""A small character-level GPT in flax, trained the PureJaxRL way, and its sealed export.

nanoGPT's model, with the parts a research template varies taken from a *recipe* (the
template's editable file):

    tokens -> token + position embeddings -> n_layers x recipe.Block -> LayerNorm -> linear head -> logits

`recipe.optimizer(total_steps)` is the optax optimizer and `recipe.loss(logits, targets)` the
per-token training loss. `make_train(config, block, optimizer, loss)` returns a pure, scan-based
`train(rng, data)`; `make_train_from` does the same from the model's init and apply functions (the
sealed harness passes the tracer's exports of them, never importing a recipe). The harness trains
every seed in one compiled call (`train_seeds`: jax.vmap over seeds, or on a CPU, where that is
slower, jax.lax.map).

Because the block is editable, the evaluator cannot rebuild the model from trusted code. The
template's tracer therefore exports the forward pass as serialized StableHLO (`export_forward`, with
`jax.export`) and the parameters as plain arrays; the evaluator deserializes the forward pass
(`sealed.load_export` with no custom calls allowed, then `check_forward`: no Python, no
callbacks, no I/O operations, the expected signature), checks that it is causal and keeps
the examples of a batch apart (`leak_check`), and scores held-out text with it
(`bits_per_char`), never importing a recipe.

The corpus is the English fortune files of Debian's `fortunes` package (about 15,000 distinct
quotations, jokes, poems and dialogues; 2.5 million characters).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jax_workloads.sealed import ArtifactError

# ---------------------------------------------------------------- characters and corpus

# Tab, newline and printable ASCII; the few other characters of the corpus (about 100 in 2.5 million) map to OTHER.
CHARS = "\t\n" + "".join(map(chr, range(32, 127)))
OTHER = len(CHARS)
VOCAB_SIZE = len(CHARS) + 1
_TABLE = np.full(128, OTHER, np.uint8)
_TABLE[[ord(c) for c in CHARS]] = np.arange(len(CHARS))

FORTUNES = Path("/usr/share/games/fortunes")  # Debian packages `fortunes` and its dependency `fortunes-min`
SEPARATOR = "\n%\n"  # between documents, as in the fortune files themselves


class CorpusMissing(Exception):
    """The fortune files are not installed; the message says how to install them."""


def encode(text: str) -> np.ndarray:
    """Character ids (uint8, one per character) of `text`."""
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    return np.where(codes < 128, _TABLE[np.minimum(codes, 127)], OTHER).astype(np.uint8)


def decode(ids: Sequence[int] | np.ndarray) -> str:
    """The text of character ids; OTHER reads as '?'."""
    return "".join(CHARS[i] if i < OTHER else "?" for i in np.asarray(ids).tolist())


def fortune_documents(root: Path = FORTUNES) -> list[str]:
    """Every distinct fortune in the fortune files under `root`, in a fixed order.

    Files are read in name order; `*.dat` (indexes) and symbolic links (`*.u8`) are skipped.
    Typewriter overstrike (`X<backspace>Y`, for bold and underline) is reduced to `Y`.
    """
    missing = CorpusMissing(f"no fortune files under {root}: install Debian's `fortunes` package "
                            "(apt-get install fortunes)")
    if not root.is_dir():
        raise missing
    docs: dict[str, None] = {}  # an ordered set: some fortunes appear in several files
    for path in sorted(p for p in root.iterdir() if p.is_file() and not p.is_symlink() and p.suffix != ".dat"):
        text = re.sub(".\x08", "", path.read_text(encoding="utf-8", errors="replace"))
        for doc in re.split(r"(?m)^%\n", text):
            doc = doc.strip("\n")
            if doc.strip():
                docs[doc] = None
    if not docs:
        raise missing
    return list(docs)


def join_documents(docs: Sequence[str]) -> str:
    """One text of the documents, each followed by the separator line '%'."""
    return "".join(doc + SEPARATOR for doc in docs)


# ---------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the GPT: context length, width, depth, heads."""

    block_size: int = 64
    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 4
    vocab_size: int = VOCAB_SIZE


@dataclass(frozen=True)
class TrainConfig:
    """One training run: model, steps, batch, and how many evenly spaced checkpoints to keep (the last at the end)."""

    model: ModelConfig
    steps: int = 1000
    batch_size: int = 32
    checkpoints: int = 5

    def __post_init__(self):
        if self.steps % self.checkpoints:
            raise ValueError(f"steps ({self.steps}) must be a multiple of checkpoints ({self.checkpoints})")


class GPT(nn.Module):
    """Token and position embeddings, a stack of the recipe's blocks, a final LayerNorm and a linear head."""

    config: ModelConfig
    block: Callable[..., nn.Module]  # the recipe's Block class: Block(d_model=..., n_heads=...)

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """Logits [batch, time, vocab] of the next character at every position of tokens [batch, time]."""
        c = self.config
        embed = nn.initializers.normal(0.02)  # nanoGPT's initialisation
        x = nn.Embed(c.vocab_size, c.d_model, embedding_init=embed, name="wte")(tokens)
        x = x + nn.Embed(c.block_size, c.d_model, embedding_init=embed, name="wpe")(jnp.arange(tokens.shape[-1]))
        for i in range(c.n_layers):
            x = self.block(d_model=c.d_model, n_heads=c.n_heads, name=f"block_{i}")(x)
        x = nn.LayerNorm(name="ln_f")(x)
        return nn.Dense(c.vocab_size, use_bias=False, name="head")(x)


def init_params(model_config: ModelConfig, block: Callable[..., nn.Module], rng: jax.Array) -> dict:
    """Fresh parameters of the GPT with this block."""
    tokens = jnp.zeros((1, model_config.block_size), jnp.int32)
    return GPT(model_config, block).init(rng, tokens)["params"]


def count_params(params) -> int:
    """Number of scalars in a parameter tree."""
    return sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))


# ---------------------------------------------------------------- training


def sample_batch(rng: jax.Array, data: jax.Array, batch_size: int, block_size: int) -> tuple[jax.Array, jax.Array]:
    """Random windows of the training text: inputs [B, T] and next-character targets [B, T]."""
    starts = jax.random.randint(rng, (batch_size,), 0, data.shape[0] - block_size)
    windows = jax.vmap(lambda s: jax.lax.dynamic_slice(data, (s,), (block_size + 1,)))(starts).astype(jnp.int32)
    return windows[:, :-1], windows[:, 1:]


def make_train(config: TrainConfig, block: Callable[..., nn.Module],
               optimizer: Callable[[int], optax.GradientTransformation],
               loss: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable:
    """A pure `train(rng, data) -> (checkpoints, train_loss)` for one seed.

    data: the training text as character ids [N]. checkpoints: the parameters at `config.checkpoints`
    evenly spaced steps (each leaf [K, ...], the last after the final step); train_loss: [steps].
    """
    model = GPT(config.model, block)
    return make_train_from(config, lambda rng: init_params(config.model, block, rng),
                           lambda params, tokens: model.apply({"params": params}, tokens), optimizer(config.steps),
                           loss)


def make_train_from(config: TrainConfig, init: Callable, apply: Callable, tx: optax.GradientTransformation,
                    loss: Callable[[jax.Array, jax.Array], jax.Array]) -> Callable:
    """make_train from the model's functions: `init(rng) -> params`, `apply(params, tokens) -> logits`.

    The sealed harness calls this with the tracer's exports of the recipe's model, optimizer and loss.
    """
    per_checkpoint = config.steps // config.checkpoints

    def train(rng: jax.Array, data: jax.Array):
        init_rng, rng = jax.random.split(rng)
        params = init(init_rng)

        def step(state, step_rng):
            params, opt_state = state
            x, y = sample_batch(step_rng, data, config.batch_size, config.model.block_size)

            def objective(p):
                return jnp.mean(loss(apply(p, x), y))

            value, grads = jax.value_and_grad(objective)(params)
            updates, opt_state = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), value

        def segment(state, rngs):
            state, losses = jax.lax.scan(step, state, rngs)
            return state, (state[0], losses)

        rngs = jax.random.split(rng, config.steps).reshape(config.checkpoints, per_checkpoint, -1)
        _, (checkpoints, losses) = jax.lax.scan(segment, (params, tx.init(params)), rngs)
        return checkpoints, losses.reshape(-1)

    return train


def train_seeds(train: Callable, vmap_seeds: int | None = None) -> Callable:
    """Every seed in one compiled call: `f(rngs [S, 2], data)` returns train's outputs stacked over seeds.

    `vmap_seeds` seeds train side by side (jax.vmap), and groups of them one after another
    (jax.lax.map); None vmaps all. Vmapping all is what fills a GPU. On 2 CPU cores one batch of
    one model already fills the cores: bench/transformer_vmap.py measures the same throughput
    either way on a quiet machine, but a 1.4x faster compile in sequence and, with other jobs on
    the cores, vmapped training up to 1.7x slower; so the CPU configuration uses 1.
    """
    if vmap_seeds is None:
        return jax.jit(jax.vmap(train, in_axes=(0, None)))
    batch = vmap_seeds if vmap_seeds > 1 else None  # None: a plain sequential scan, no batch dimension at all
    return jax.jit(lambda rngs, data: jax.lax.map(lambda rng: train(rng, data), rngs, batch_size=batch))


# ---------------------------------------------------------------- sealed export (harness side)


def param_names(n: int) -> list[str]:
    """Names of the exported parameter arrays, in the order the exported forward pass takes them."""
    return [f"p{i:03d}" for i in range(n)]


def export_forward(model_config: ModelConfig, block: Callable[..., nn.Module], params, batch_size: int) -> bytes:
    """The forward pass `f(leaves, tokens[batch, T]) -> logits[batch, T, V]` as serialized StableHLO for CPU.

    `leaves` is the list of parameter arrays of one model, in `jax.tree_util.tree_leaves` order.
    """
    model = GPT(model_config, block)
    leaves, treedef = jax.tree_util.tree_flatten(params)

    def forward(leaves, tokens):
        p = jax.tree_util.tree_unflatten(treedef, leaves)
        return model.apply({"params": p}, tokens).astype(jnp.float32)

    specs = [jax.ShapeDtypeStruct(np.shape(x), jnp.float32) for x in leaves]
    tokens = jax.ShapeDtypeStruct((batch_size, model_config.block_size), jnp.int32)
    exported = jax.export.export(jax.jit(forward), platforms=["cpu"])(specs, tokens)
    return bytes(exported.serialize())


# ---------------------------------------------------------------- sealed evaluation (evaluator side)


def check_forward(exp: jax.export.Exported, batch_size: int, block_size: int, vocab_size: int) -> None:
    """Raise ArtifactError unless an exported forward pass (already checked by sealed.load_export) has the
    expected signature: (float32 parameters..., int32 tokens [batch, block]) -> float32 logits [batch, block, vocab]."""
    if len(exp.in_avals) < 2:
        raise ArtifactError(f"the exported forward pass takes {len(exp.in_avals)} arrays, expected parameters and "
                            "tokens")
    *params, tokens = exp.in_avals
    if (tokens.shape, str(tokens.dtype)) != ((batch_size, block_size), "int32"):
        raise ArtifactError(f"the exported forward pass takes tokens {tokens.str_short()}, expected "
                            f"int32[{batch_size},{block_size}]")
    if any(str(a.dtype) != "float32" for a in params):
        raise ArtifactError("the exported forward pass takes parameters that are not float32")
    if len(exp.out_avals) != 1 or (exp.out_avals[0].shape, str(exp.out_avals[0].dtype)) != \
            ((batch_size, block_size, vocab_size), "float32"):
        got = ", ".join(a.str_short() for a in exp.out_avals)
        raise ArtifactError(f"the exported forward pass returns {got}, expected float32[{batch_size},{block_size},"
                            f"{vocab_size}]")


def _log_softmax(logits) -> np.ndarray:
    x = np.asarray(logits, np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def leak_check(forward: Callable, leaves: list, tokens: np.ndarray, seed: int, atol: float = 1e-3) -> str | None:
    """Why the model sees what it must not, or None: a prediction may use only its own row's earlier characters.

    Changing every character after position t (in all rows) must leave the log-probabilities at positions
    <= t unchanged (causality), and changing every other row must leave a row's log-probabilities unchanged
    (no mixing of the examples of a batch; checked for a few rows chosen at random). Only the forward pass
    runs in JAX; the comparisons are numpy, so that nothing else is compiled.
    """
    tokens = np.asarray(tokens, np.int32)
    b, t = tokens.shape
    rng = np.random.default_rng(seed)
    base = _log_softmax(forward(leaves, tokens))
    for cut in (0, t // 4, t // 2, t - 2):
        changed = np.where(np.arange(t) > cut, rng.integers(0, VOCAB_SIZE, tokens.shape), tokens).astype(np.int32)
        out = _log_softmax(forward(leaves, changed))
        diff = float(np.max(np.abs(out[:, :cut + 1] - base[:, :cut + 1])))
        if not diff <= atol:
            return (f"the model is not causal: changing the characters after position {cut} changes its "
                    f"predictions at positions <= {cut} (by up to {diff:.3g} nats)")
    for row in rng.choice(b, size=min(b, 3), replace=False):
        changed = rng.integers(0, VOCAB_SIZE, tokens.shape).astype(np.int32)
        changed[row] = tokens[row]
        diff = float(np.max(np.abs(_log_softmax(forward(leaves, changed))[row] - base[row])))
        if not diff <= atol:
            return (f"the model mixes the examples of a batch: changing the other rows changes its predictions "
                    f"for row {row} (by up to {diff:.3g} nats)")
    return None


def eval_windows(ids: np.ndarray, n_windows: int, block_size: int, seed: int) -> np.ndarray:
    """The first n_windows consecutive, non-overlapping windows of T + 1 characters (inputs and targets).

    They come in a seeded random order, so that the rows of a batch are unrelated text (the leak check
    rejects models that mix rows; this makes mixing useless besides).
    """
    need = n_windows * block_size + 1
    if ids.size < need:
        raise ValueError(f"the held-out text has {ids.size} characters, {need} are needed")
    starts = np.random.default_rng(seed).permutation(n_windows) * block_size
    return np.stack([ids[s:s + block_size + 1] for s in starts]).astype(np.int32)


def bits_per_char(forward: Callable, leaves: list, windows: np.ndarray, batch_size: int) -> float:
    """Mean cross-entropy in bits of every next character of the windows [N, T + 1], batch by batch.

    The evaluator normalises the logits itself (log_softmax, in float64), so an exported model
    cannot report probabilities that do not sum to one.
    """
    total, count = 0.0, 0
    for i in range(0, len(windows) - batch_size + 1, batch_size):
        w = windows[i:i + batch_size]
        logp = _log_softmax(forward(leaves, w[:, :-1]))
        total -= float(np.take_along_axis(logp, w[:, 1:, None], axis=-1).sum())
        count += w[:, 1:].size
    return total / count / float(np.log(2.0))


def tokens_per_second(forward: Callable, leaves: list, tokens: jax.Array, repeats: int = 5) -> float:
    """Inference throughput of the forward pass (characters scored per second), best of `repeats` timed calls."""
    jax.block_until_ready(forward(leaves, tokens))  # compiled and warm
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(forward(leaves, tokens))
        best = min(best, time.perf_counter() - t)
    return tokens.size / best
