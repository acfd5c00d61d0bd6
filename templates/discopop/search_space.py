"""Search space of the DiscoPOP template for the LLM-free (evolutionary) proposer.

A genome is a small expression tree, in plain JSON-serialisable data, for a per-example preference
loss of the log-ratio margin

    rho = (policy_chosen - policy_rejected) - (reference_chosen - reference_rejected),  z = beta * rho.

Grammar (depth <= MAX_DEPTH, a term counts as depth 1):

    expr := {"op": "term", "prim": P, "scale": s, "margin": m, "units": "z" | "rho"}
          | {"op": "sum", "weights": [w1, w2], "args": [expr, expr]}           w1 * e1 + w2 * e2
          | {"op": "gate", "shift": c, "tau": t, "args": [expr, expr]}         (1 - w) * e1 + w * e2,
                                                                               w = sigmoid((z - c) / t)
          | {"op": "smooth", "eps": e, "args": [expr]}                         (1 - e) * f(z) + e * f(-z)

A term applies a primitive P to u = s * z - m (units "z"), or to u = s * rho - m / beta (units "rho",
which makes IPO exact). The primitives are decreasing in u except the two-sided regression "square":

    logistic     -log sigmoid(u)      DPO (the margin makes it a smooth hinge softplus(m - s z))
    exp          exp(-u)              evaluated at max(u, -50), as LRML guards it, so it stays finite
    hinge        relu(-u)             SLiC
    sq_hinge     relu(-u)^2
    softplus_sq  softplus(-u)^2       a smooth, one-sided bounded-margin loss
    square       u^2                  IPO: (rho - 0.5 / beta)^2
    sigmoid      sigmoid(-u)          bounded, robust to flipped labels

"gate" is LRML's log-ratio-modulated blend; "smooth" is conservative DPO's label smoothing, which
evaluates its argument at the mirrored margin. Every member is finite, with finite gradients, for any
finite margin: the only exponential is clipped, and squares are of at most linear quantities.
Constants stay in fixed ranges (RANGES) and are rounded to three significant digits, so genomes and
the code rendered from them stay short and readable.

The proposer calls known(), sample(), mutate(), crossover(), render(), describe() and canonical() (the
interface base.search_space.SearchSpace; canonical() names the template's symmetries); validate()
checks a genome that came from elsewhere (a file, a hand edit).
"""

from __future__ import annotations

import copy
import json
import random
import textwrap
from typing import Any

from base.search_space import Range, choose_other, mutate_until_changed, round_sig, weighted_choice

Genome = dict[str, Any]
NodePath = tuple[int, ...]  # child indices from the root to a node

# The member of known() that the template ships as its editable file (its baseline).
BASELINE = "dpo"
NOUN = "loss"                                    # how ideas name what is evolved
GOAL = "trades reward against KL better"         # ... and what better means here
MAX_DEPTH = 3
EXP_FLOOR = -50.0  # exp(-u) is evaluated at max(u, EXP_FLOOR): at most e^50 ~ 5e21, far from float32's 3e38
PRIMITIVES = ("logistic", "exp", "hinge", "sq_hinge", "softplus_sq", "square", "sigmoid")
# Positive scale-like constants are drawn log-uniformly and perturbed multiplicatively, offsets additively.
ADDITIVE_SIGMA = 0.5
LOG_SIGMA = 0.3
RANGES: dict[str, Range] = {
    "scale": Range(0.1, 4.0, LOG_SIGMA, log=True),
    "margin": Range(0.0, 5.0, ADDITIVE_SIGMA),
    "weight": Range(0.1, 2.0, LOG_SIGMA, log=True),
    "tau": Range(0.01, 1.0, LOG_SIGMA, log=True),
    "shift": Range(0.0, 5.0, ADDITIVE_SIGMA),
    "eps": Range(0.01, 0.45, LOG_SIGMA, log=True),  # eps >= 0.5 would prefer the rejected response
}


# ---------------------------------------------------------------- constructors and known members


def term(prim: str, scale: float = 1.0, margin: float = 0.0, units: str = "z") -> Genome:
    """A leaf: primitive `prim` applied to u = scale * z - margin (or scale * rho - margin / beta)."""
    return {"op": "term", "prim": prim, "scale": float(scale), "margin": float(margin), "units": units}


def weighted_sum(a: Genome, b: Genome, wa: float = 1.0, wb: float = 1.0) -> Genome:
    """wa * a + wb * b."""
    return {"op": "sum", "weights": [float(wa), float(wb)], "args": [a, b]}


def gate(low: Genome, high: Genome, shift: float = 0.0, tau: float = 0.05) -> Genome:
    """(1 - w) * low + w * high with w = sigmoid((z - shift) / tau): `low` for small margins, `high` for large."""
    return {"op": "gate", "shift": float(shift), "tau": float(tau), "args": [low, high]}


def smooth(child: Genome, eps: float = 0.1) -> Genome:
    """(1 - eps) * child(z) + eps * child(-z): label smoothing against flipped preferences."""
    return {"op": "smooth", "eps": float(eps), "args": [child]}


def known() -> dict[str, Genome]:
    """Named members: the losses in candidates/ (same math) and a few published or seeded variants."""
    dpo = term("logistic")
    return {
        "dpo": dpo,
        "ipo": term("square", margin=0.5, units="rho"),
        "slic": term("hinge", margin=1.0),
        "lrml": gate(term("logistic"), term("exp"), shift=0.0, tau=0.05),
        # Not in candidates/: conservative DPO, LRML with its blend moved off zero, a bounded margin.
        "cdpo": smooth(term("logistic"), eps=0.1),
        "lrml_shifted": gate(term("logistic"), term("exp"), shift=2.0, tau=0.05),
        "smooth_sq_hinge": term("softplus_sq", margin=1.0),
    }


# ---------------------------------------------------------------- validation and tree helpers


def validate(genome: Genome) -> None:
    """Raise ValueError unless `genome` is a well-formed member of the space (fields, ranges, depth)."""
    if height(genome) > MAX_DEPTH:
        raise ValueError(f"genome deeper than {MAX_DEPTH}")
    for _, node in _nodes(genome):
        op = node.get("op")
        if op == "term":
            if node.get("prim") not in PRIMITIVES:
                raise ValueError(f"unknown primitive {node.get('prim')!r}")
            if node.get("units") not in ("z", "rho"):
                raise ValueError(f"units must be 'z' or 'rho', not {node.get('units')!r}")
            RANGES["scale"].check(node["scale"], "scale")
            RANGES["margin"].check(node["margin"], "margin")
        elif op == "sum":
            if len(node["weights"]) != 2:
                raise ValueError("a sum has two weights")
            for w in node["weights"]:
                RANGES["weight"].check(w, "weight")
        elif op == "gate":
            RANGES["shift"].check(node["shift"], "shift")
            RANGES["tau"].check(node["tau"], "tau")
        elif op == "smooth":
            RANGES["eps"].check(node["eps"], "eps")
        else:
            raise ValueError(f"unknown op {op!r}")
        if op != "term" and len(node["args"]) != (1 if op == "smooth" else 2):
            raise ValueError(f"wrong number of arguments for {op!r}")


def height(node: Genome) -> int:
    """Depth of the tree below and including `node`; a term has height 1."""
    return 1 + max((height(c) for c in node.get("args", [])), default=0)


def _nodes(node: Genome, path: NodePath = ()) -> list[tuple[NodePath, Genome]]:
    """Every node with its path, parents before children."""
    out = [(path, node)]
    for i, child in enumerate(node.get("args", [])):
        out += _nodes(child, (*path, i))
    return out


def _replaced(root: Genome, path: NodePath, new: Genome) -> Genome:
    """A copy of `root` with the node at `path` replaced by a copy of `new`."""
    if not path:
        return copy.deepcopy(new)
    root = copy.deepcopy(root)
    parent = root
    for i in path[:-1]:
        parent = parent["args"][i]
    parent["args"][path[-1]] = copy.deepcopy(new)
    return root


# ---------------------------------------------------------------- random constants and subtrees


def _random_term(rng: random.Random) -> Genome:
    prim = rng.choice(PRIMITIVES)
    # Unit scale and zero margin are the natural defaults, so they stay common.
    scale = 1.0 if rng.random() < 0.5 else RANGES["scale"].draw(rng)
    margin = 0.0 if prim != "square" and rng.random() < 0.4 else RANGES["margin"].draw(rng)
    units = "rho" if rng.random() < (0.5 if prim == "square" else 0.1) else "z"
    return term(prim, scale, margin, units)


def _random_tree(rng: random.Random, max_height: int, leaf_p: float = 0.35) -> Genome:
    if max_height <= 1 or rng.random() < leaf_p:
        return _random_term(rng)
    op = rng.choices(["sum", "gate", "smooth"], weights=[0.4, 0.4, 0.2])[0]
    if op == "smooth":
        return smooth(_random_tree(rng, max_height - 1, 0.7), RANGES["eps"].draw(rng))
    a, b = _random_tree(rng, max_height - 1, 0.6), _random_tree(rng, max_height - 1, 0.6)
    if op == "sum":
        return weighted_sum(a, b, RANGES["weight"].draw(rng), RANGES["weight"].draw(rng))
    shift = 0.0 if rng.random() < 0.3 else RANGES["shift"].draw(rng)
    return gate(a, b, shift, RANGES["tau"].draw(rng))


def sample(rng: random.Random) -> Genome:
    """A random member of the space."""
    return _random_tree(rng, MAX_DEPTH)


# ---------------------------------------------------------------- mutation and crossover


def _mutate_constant(g: Genome, rng: random.Random) -> Genome:
    path, node = rng.choice(_nodes(g))
    node = copy.deepcopy(node)
    if node["op"] == "term":
        key = rng.choice(["scale", "margin"])
        node[key] = RANGES[key].perturb(node[key], rng)
    elif node["op"] == "sum":
        i = rng.randrange(2)
        node["weights"][i] = RANGES["weight"].perturb(node["weights"][i], rng)
    else:
        key = {"gate": rng.choice(["shift", "tau"]), "smooth": "eps"}[node["op"]]
        node[key] = RANGES[key].perturb(node[key], rng)
    return _replaced(g, path, node)


def _terms(g: Genome) -> list[tuple[NodePath, Genome]]:
    return [(p, n) for p, n in _nodes(g) if n["op"] == "term"]


def _swap_primitive(g: Genome, rng: random.Random) -> Genome:
    path, node = rng.choice(_terms(g))
    return _replaced(g, path, {**node, "prim": choose_other(PRIMITIVES, node["prim"], rng)})


def _toggle_units(g: Genome, rng: random.Random) -> Genome:
    path, node = rng.choice(_terms(g))
    return _replaced(g, path, {**node, "units": "z" if node["units"] == "rho" else "rho"})


def _wrap(g: Genome, rng: random.Random) -> Genome | None:
    """Put a node under a new sum, gate or smoothing, next to a fresh term: the way terms get blended in."""
    room = [(p, n) for p, n in _nodes(g) if len(p) + height(n) + 1 <= MAX_DEPTH]
    if not room:
        return None
    path, node = rng.choice(room)
    op = rng.choice(["sum", "gate", "smooth"])
    if op == "smooth":
        return _replaced(g, path, smooth(node, RANGES["eps"].draw(rng)))
    pair = [node, _random_term(rng)]
    rng.shuffle(pair)
    if op == "sum":
        return _replaced(g, path, weighted_sum(*pair, RANGES["weight"].draw(rng), RANGES["weight"].draw(rng)))
    return _replaced(g, path, gate(*pair, RANGES["shift"].draw(rng), RANGES["tau"].draw(rng)))


def _unwrap(g: Genome, rng: random.Random) -> Genome | None:
    inner = [(p, n) for p, n in _nodes(g) if n["op"] != "term"]
    if not inner:
        return None
    path, node = rng.choice(inner)
    return _replaced(g, path, rng.choice(node["args"]))


def _swap_gate(g: Genome, rng: random.Random) -> Genome | None:
    gates = [(p, n) for p, n in _nodes(g) if n["op"] == "gate"]
    if not gates:
        return None
    path, node = rng.choice(gates)
    return _replaced(g, path, {**node, "args": node["args"][::-1]})


def _regrow(g: Genome, rng: random.Random) -> Genome:
    path, _ = rng.choice(_nodes(g))
    return _replaced(g, path, _random_tree(rng, MAX_DEPTH - len(path), leaf_p=0.6))


MUTATIONS = [  # (operator, weight): most changes are small
    (_mutate_constant, 0.4),
    (_swap_primitive, 0.15),
    (_toggle_units, 0.05),
    (_wrap, 0.15),
    (_unwrap, 0.1),
    (_swap_gate, 0.05),
    (_regrow, 0.1),
]


def mutate(genome: Genome, rng: random.Random) -> Genome:
    """A small random change: perturb a constant, swap a primitive, wrap/unwrap a node, or regrow a subtree.

    Retries until the genome actually changes (a constant at its bound may not move); `genome` is not modified.
    """
    return mutate_until_changed(lambda g, r: weighted_choice(r, MUTATIONS)(g, r), genome, rng)


def crossover(a: Genome, b: Genome, rng: random.Random) -> Genome:
    """Blend a and b under a sum or gate (when both are shallow enough), or graft a subtree of b into a.

    Where the graft would replace a term by a term, the child takes each field from either one instead.
    """
    if rng.random() < 0.3 and max(height(a), height(b)) < MAX_DEPTH:
        pair = [a, b]
        rng.shuffle(pair)
        if rng.random() < 0.5:
            return copy.deepcopy(weighted_sum(*pair, RANGES["weight"].draw(rng), RANGES["weight"].draw(rng)))
        return copy.deepcopy(gate(*pair, RANGES["shift"].draw(rng), RANGES["tau"].draw(rng)))
    path, node = rng.choice(_nodes(a))
    donors = [n for _, n in _nodes(b) if len(path) + height(n) <= MAX_DEPTH]  # b's terms always fit
    donor = rng.choice(donors)
    if node["op"] == donor["op"] == "term":
        # Two leaves: mix their fields, or grafting would just copy b's term.
        donor = {k: (node if rng.random() < 0.5 else donor)[k] for k in node}
    return _replaced(a, path, donor)


# ---------------------------------------------------------------- symmetries


def _merged(node: Genome) -> Genome:
    """The tree with each gate between two equal branches replaced by the branch (its blend of a with a is a)."""
    if "args" in node:
        node["args"] = [_merged(child) for child in node["args"]]
        if node["op"] == "gate" and node["args"][0] == node["args"][1]:
            return node["args"][0]
    return node


def canonical(genome: Genome) -> Genome:
    """The one genome of those this template's metric scores alike (the proposer evaluates it once).

    Beta: the metric reads the reward-KL frontier of a beta sweep, so a loss of c*z is the same loss at
    c times each beta and scores as the loss it rescales (the README measures DPO and four rescalings
    within 0.004). Replacing z by c*z multiplies every z-term's scale by c and divides every rho-term's
    margin (m / beta) and every gate's shift and width by c; c makes the first z-term's scale 1 (else
    the first rho-term's margin, if any). A positive factor on the whole loss: Adam's update does not
    change with it (but for its epsilon), so a root sum's weights are divided by its first, and a root
    sum of two equal branches is the branch. A gate between two equal branches is the branch anywhere.
    Constants are then rounded as genomes are, so copies meet up to three significant digits.
    """
    g = _merged(json.loads(json.dumps(genome)))  # not deepcopy: a subtree twice in the tree is scaled once each
    if g["op"] == "sum" and g["args"][0] == g["args"][1]:
        g = g["args"][0]  # w1 * a + w2 * a: a positive factor on a
    nodes = [n for _, n in _nodes(g)]
    z_scales = [n["scale"] for n in nodes if n["op"] == "term" and n["units"] == "z"]
    rho_margins = [n["margin"] for n in nodes if n["op"] == "term" and n["units"] == "rho" and n["margin"] > 0]
    c = 1 / z_scales[0] if z_scales else rho_margins[0] if rho_margins else 1.0
    for n in nodes:
        if n["op"] == "term" and n["units"] == "z":
            n["scale"] = round_sig(n["scale"] * c)
        elif n["op"] == "term":
            n["margin"] = round_sig(n["margin"] / c)
        elif n["op"] == "gate":
            n["shift"], n["tau"] = round_sig(n["shift"] / c), round_sig(n["tau"] / c)
    if g["op"] == "sum":
        g["weights"] = [1.0, round_sig(g["weights"][1] / g["weights"][0])]
    return g


# ---------------------------------------------------------------- formatting: shared by code and description

# Operator precedence of a rendered expression, to parenthesise only where needed.
SUM, UNARY, ATOM = 0, 1, 2


def _num(x: float, code: bool) -> str:
    return repr(float(x)) if code else f"{x:g}"


def _affine(coef: float, var: str, const: float, per_beta: bool, code: bool) -> tuple[str, bool]:
    """`coef * var + const` (const divided by beta when per_beta), written the way a person would.

    Returns the text and whether it is a bare name (needs no parentheses under a power).
    """
    mul = " * " if code else "*"
    div = " / " if code else "/"
    a = abs(coef)
    v = var if a == 1 else f"{_num(a, code)}{mul}{var}"
    if const == 0:
        return (v, a == 1) if coef > 0 else (f"-{v}", False)
    c = _num(abs(const), code) + (f"{div}beta" if per_beta else "")
    if coef < 0 and const > 0:
        return f"{c} - {v}", False
    lead = v if coef > 0 else f"-{v}"
    return f"{lead} {'+' if const > 0 else '-'} {c}", False


# prim: (argument is -u rather than u, code template, description template, precedence)
_PRIM_FORMS = {
    "logistic": (False, "-jax.nn.log_sigmoid({})", "-logsigmoid({})", UNARY),
    "exp": (False, "jnp.exp(-jnp.maximum({}, " + repr(EXP_FLOOR) + "))", "exp({})", ATOM),
    "hinge": (True, "jax.nn.relu({})", "relu({})", ATOM),
    "sq_hinge": (True, "jax.nn.relu({}) ** 2", "relu({})^2", ATOM),
    "softplus_sq": (True, "jax.nn.softplus({}) ** 2", "softplus({})^2", ATOM),
    "square": (False, "{} ** 2", "{}^2", ATOM),
    "sigmoid": (True, "jax.nn.sigmoid({})", "sigmoid({})", ATOM),
}


def _term_text(node: Genome, flip: bool, code: bool) -> tuple[str, int]:
    negate, code_form, desc_form, prec = _PRIM_FORMS[node["prim"]]
    sign = -1.0 if flip else 1.0  # f(-z): the variable's coefficient changes sign, the margin does not
    coef, const = sign * node["scale"], -node["margin"]
    if node["prim"] == "exp" and not code:
        negate = True  # exp(1 - z) reads better than exp(-(z - 1)); the code keeps u for the clip
    if negate:
        coef, const = -coef, -const
    text, bare = _affine(coef, node["units"], const, node["units"] == "rho", code)
    if node["prim"] == "square" and not bare:
        text = f"({text})"
    return (code_form if code else desc_form).format(text), prec


def _wrap_text(text: str, prec: int, need: int) -> str:
    return text if prec >= need else f"({text})"


def _gate_weight(node: Genome, var: str, code: bool) -> str:
    diff = var if node["shift"] == 0 else f"{var} - {_num(node['shift'], code)}"
    if code:
        return f"jax.nn.sigmoid({diff if node['shift'] == 0 else f'({diff})'} / {_num(node['tau'], code)})"
    return f"sigmoid({diff if node['shift'] == 0 else f'({diff})'}/{_num(node['tau'], code)})"


def describe(genome: Genome) -> str:
    """One line, a human-readable formula over z = beta * rho, e.g. "-logsigmoid(z)"."""
    return _describe(genome, flip=False)[0]


def _describe(node: Genome, flip: bool) -> tuple[str, int]:
    op = node["op"]
    if op == "term":
        return _term_text(node, flip, code=False)
    args = node["args"]
    if op == "smooth":
        e = node["eps"]
        a = _wrap_text(*_describe(args[0], flip), ATOM)
        b = _wrap_text(*_describe(args[0], not flip), ATOM)
        return f"{_num(round_sig(1 - e), False)}*{a} + {_num(e, False)}*{b}", SUM
    if op == "sum":
        parts = []
        for w, child in zip(node["weights"], args, strict=True):
            text, prec = _describe(child, flip)
            parts.append(text if w == 1 else f"{_num(w, False)}*{_wrap_text(text, prec, ATOM)}")
        return " + ".join(parts), SUM
    low, high = (_describe(c, flip)[0] for c in args)
    return f"blend({low}, {high}; w={_gate_weight(node, '-z' if flip else 'z', code=False)})", ATOM


# ---------------------------------------------------------------- rendering loss.py


class _Code:
    """What rendering accumulates: assignment lines before the return, and which names the code uses."""

    def __init__(self, gates: int):
        self.lines: list[str] = []
        self.gates, self.gate_count, self.part_count = gates, 0, 0
        self.uses_z = self.uses_jnp = self.uses_jax = False

    def gate_name(self) -> str:
        self.gate_count += 1
        return "w" if self.gates == 1 else f"w{self.gate_count}"

    def hoist(self, text: str) -> str:
        self.part_count += 1
        name = f"part{self.part_count}"
        self.lines.append(f"{name} = {text}")
        return name


HOIST_CHARS = 50  # inner expressions longer than this get their own line


def _gate_instances(node: Genome) -> int:
    n = int(node["op"] == "gate") + sum(_gate_instances(c) for c in node.get("args", []))
    return 2 * n if node["op"] == "smooth" else n  # a smoothed child is rendered twice


def _code(node: Genome, flip: bool, out: _Code, root: bool = False) -> tuple[str, int]:
    op = node["op"]
    if op == "term":
        out.uses_z |= node["units"] == "z"
        out.uses_jnp |= node["prim"] == "exp"
        out.uses_jax |= node["prim"] not in ("exp", "square")
        return _term_text(node, flip, code=True)
    args = node["args"]
    if op == "smooth":
        e = node["eps"]
        a = _wrap_text(*_code(args[0], flip, out), UNARY)
        b = _wrap_text(*_code(args[0], not flip, out), UNARY)
        text = f"{_num(round_sig(1 - e), True)} * {a} + {_num(e, True)} * {b}"
    elif op == "sum":
        parts = []
        for w, child in zip(node["weights"], args, strict=True):
            t, prec = _code(child, flip, out)
            parts.append(t if w == 1 else f"{_num(w, True)} * {_wrap_text(t, prec, UNARY)}")
        text = " + ".join(parts)
    else:
        out.uses_z = out.uses_jax = True
        name = out.gate_name()
        out.lines.append(f"{name} = {_gate_weight(node, '-z' if flip else 'z', code=True)}")
        low, high = (_wrap_text(*_code(c, flip, out), UNARY) for c in args)
        text = f"(1.0 - {name}) * {low} + {name} * {high}"
    if not root and len(text) > HOIST_CHARS:
        return out.hoist(text), ATOM
    return text, SUM


def render(genome: Genome) -> dict[str, str]:
    """The genome as a complete loss.py, {"loss.py": source}, with the template's signature."""
    validate(genome)
    out = _Code(_gate_instances(genome))
    expr, _ = _code(genome, False, out, root=True)
    formula = textwrap.fill(f"loss = {describe(genome)}", width=100, subsequent_indent="    ")
    head = [
        f'"""{formula}',
        "",
        "where z = beta * rho, and rho is the policy's log-ratio margin of the chosen over the rejected response",
        "minus the reference's. Generated by templates/discopop/search_space.py from the genome",
        *textwrap.wrap(json.dumps(genome), width=100, break_long_words=False, break_on_hyphens=False),
        '"""',
        "",
    ]
    imports = ["import jax"] * out.uses_jax + ["import jax.numpy as jnp"] * out.uses_jnp
    if imports:
        head += [*imports, ""]
    body = ["rho = (policy_chosen_logps - policy_rejected_logps) - (reference_chosen_logps - reference_rejected_logps)"]
    if out.uses_z:
        body.append("z = beta * rho")
    if out.uses_jnp:
        body.append("# Each exp(-u) is taken at max(u, -50): finite even where a blend weight is 0 (0 * inf = NaN).")
    body += [*out.lines, f"return {expr}"]
    source = "\n".join([
        *head,
        "",
        "def loss(policy_chosen_logps, policy_rejected_logps, reference_chosen_logps, reference_rejected_logps, beta):",
        *("    " + line for line in body),
        "",
    ])
    return {"loss.py": source}
