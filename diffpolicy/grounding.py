"""Grounding: an instruction -> which mode it commands, with a confidence, or a refusal.

    g = Grounder(num_modes=K, factors=mode_factors(names))      # 3 members, ~0.3 M parameters each
    fit_grounder(g, texts, labels, off_task, model_path, seed)  # labels (N,) ints in [0, K)
    probs = ground(g, texts, model_path)                        # (N, K + 1); column K: off-task
    modes, confidence = decide(probs, threshold)                # (N,) int, -1 = refused; (N,)

A language run does not ask the diffusion policy to read sentences: the policy is conditioned on
a mode (an embedding per mode, a null one for classifier-free guidance), and this classifier maps
text to a mode. Each of its members (`Reader`) reads the frozen sentence encoder's token states
(B, T, E) (language.py) through one attention layer and a few learned attention queries, so the
words that decide ("left", "not", "obstacle on your right") are not averaged away as they are in
the mean-pooled sentence vector, and an MLP gives K + 1 outputs: the modes and "not a command
for this task". Each member is trained on the dataset's paraphrases (envs/instructions.py
writes many per episode) and on off-task sentences, with its own held-out tenth on which its
temperature is fit; the grounder averages the members' probabilities.

`decide` refuses (mode -1) when the off-task class wins or the best mode's probability is below
the threshold (policy.grounding_threshold): an instruction it cannot ground confidently gets a
refusal, never a silent guess.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from diffpolicy import language
from diffpolicy.errors import UserError


def mode_factors(mode_names: Sequence[str]) -> list[int]:
    """Sizes of the choices a mode composes, when its names say so: names "A-B-C" that
    enumerate every combination in mixed-radix order (last part fastest), e.g. the maze's 24
    routes -> [2, 3, 4]; otherwise [K]. A composed sentence then has one prediction per choice."""
    K = len(mode_names)
    parts = [str(n).split("-") for n in mode_names]
    if K < 2 or len({len(p) for p in parts}) != 1 or len(parts[0]) < 2:
        return [K]
    values = [list(dict.fromkeys(p[i] for p in parts)) for i in range(len(parts[0]))]
    grid = [[]]
    for v in values:
        grid = [g + [x] for g in grid for x in v]
    return [len(v) for v in values] if grid == parts else [K]


class Reader(nn.Module):
    """One classifier: token states (B, T, E) + mask (B, T) -> log-probabilities (B, K + 1), K
    modes + off-task.

    A mode composed of choices (`factors`, e.g. [2, 3, 4] for the maze's rows) gets one softmax
    per choice: log p(mode) = log p(on task) + sum_f log p_f(choice_f), so a route never seen as a
    whole sentence is still predicted from its parts. `temperature` divides every logit.
    """

    def __init__(
        self,
        num_modes: int,
        dim: int = 384,
        factors: Sequence[int] | None = None,
        width: int = 128,
        layers: int = 1,
        heads: int = 4,  # attention queries that pool the tokens (the layer has 4 heads)
        hidden: int = 256,
    ):
        super().__init__()
        factors = list(factors or [num_modes])
        if int(np.prod(factors)) != num_modes:
            raise ValueError(f"factors {factors} do not multiply to num_modes={num_modes}")
        self.num_modes, self.factors = num_modes, factors
        digits = np.stack(np.unravel_index(np.arange(num_modes), factors), axis=1)  # (K, F)
        self.register_buffer("digits", torch.from_numpy(digits.astype(np.int64)), persistent=False)
        self.proj = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, width))
        layer = nn.TransformerEncoderLayer(
            width,
            nhead=4,
            dim_feedforward=2 * width,
            dropout=0.1,
            batch_first=True,
            norm_first=True,
        )
        self.mix = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.queries = nn.Parameter(torch.randn(heads, width) * width**-0.5)
        self.mlp = nn.Sequential(
            nn.LayerNorm((heads + 1) * width),
            nn.Dropout(0.1),
            nn.Linear((heads + 1) * width, hidden),
            nn.GELU(),
            nn.Linear(hidden, sum(factors) + 1),
        )
        self.register_buffer("temperature", torch.ones(()))

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        tokens = self.mix(self.proj(tokens), src_key_padding_mask=~mask)  # (B, T, W)
        scores = torch.einsum("bte,he->bht", tokens, self.queries)  # (B, H, T)
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        pooled = torch.einsum("bht,bte->bhe", scores.softmax(-1), tokens)  # (B, H, W)
        m = mask[..., None].float()
        mean = (tokens * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, W)
        logits = self.mlp(torch.cat([pooled.flatten(1), mean], dim=-1)) / self.temperature
        off, choices = logits[:, -1], logits[:, :-1].split(self.factors, dim=-1)
        joint = nn.functional.logsigmoid(-off)[:, None]  # (B, 1): log p(on task)
        for f, lf in enumerate(choices):
            joint = joint + lf.log_softmax(-1)[:, self.digits[:, f]]  # (B, K)
        return torch.cat([joint, nn.functional.logsigmoid(off)[:, None]], dim=-1)  # (B, K + 1)


class Grounder(nn.Module):
    """`members` Readers, each fit on its own split, initialization and batch order; their
    probabilities are averaged: (B, T, E), (B, T) -> log of the mean probability (B, K + 1).
    Where the members disagree (an unusual phrasing) the mean is less confident, so the
    sentence is refused rather than read one member's way."""

    def __init__(self, num_modes: int, dim: int = 384, factors=None, members: int = 3, **kw):
        super().__init__()
        self.num_modes = num_modes
        self.members = nn.ModuleList(Reader(num_modes, dim, factors, **kw) for _ in range(members))

    def forward(self, tokens: Tensor, mask: Tensor) -> Tensor:
        logp = torch.stack([m(tokens, mask) for m in self.members])  # (M, B, K + 1)
        return torch.logsumexp(logp, dim=0) - np.log(len(self.members))


def _padded(texts: Sequence[str], model_path: str) -> tuple[Tensor, Tensor]:
    """(N, T, E) token states, zero-padded, and the (N, T) bool mask of real tokens."""
    states = language.token_states(texts, model_path)
    T = max(len(s) for s in states)
    tokens = torch.zeros(len(states), T, states[0].shape[-1])
    mask = torch.zeros(len(states), T, dtype=torch.bool)
    for i, s in enumerate(states):
        tokens[i, : len(s)] = torch.from_numpy(s)
        mask[i, : len(s)] = True
    return tokens, mask


def fit_grounder(
    grounder: Grounder,
    texts: Sequence[str],
    labels: Sequence[int],
    off_task: Sequence[str],
    model_path: str = "",
    seed: int = 0,
    steps: int = 1200,
    batch_size: int = 128,
    copies: dict[str, str] | None = None,
) -> dict:
    """Fit every member of `grounder` on (text, mode) pairs and off-task texts (label K)
    (`fit_reader`, seeds seed, seed + 1, ...) and freeze it. `copies` maps a text made from
    another one (a misspelled copy) to that original: a copy is never held out, and trains only
    when its original does. Returns the members' summaries and their mean held-out accuracy.
    Runs on CPU: the encoder runs once per distinct text."""
    K = grounder.num_modes
    pairs = dict(zip(map(str, texts), map(int, labels)))  # one label per distinct text
    if any(not 0 <= y < K for y in pairs.values()):
        raise ValueError(f"labels must be in [0, {K})")
    pairs.update({str(t): K for t in off_task if str(t) not in pairs})
    fits = [
        fit_reader(m, pairs, model_path, seed + i, steps, batch_size, copies or {})
        for i, m in enumerate(grounder.members)
    ]
    for p in grounder.parameters():
        p.requires_grad_(False)
    grounder.eval()
    return {
        "texts": fits[0]["texts"] + fits[0]["holdout_texts"],
        "holdout_accuracy": float(np.mean([f["holdout_accuracy"] for f in fits])),
        "temperature": float(np.mean([f["temperature"] for f in fits])),
        "members": fits,
    }


def fit_reader(
    grounder: Reader,
    pairs: dict[str, int],
    model_path: str,
    seed: int,
    steps: int,
    batch_size: int,
    copies: dict[str, str],
) -> dict:
    """Train one Reader on {text: label} (label K = off-task); fit its temperature on a tenth of
    the original texts held out (drawn with `seed`), their `copies` left out with them (a copy
    one slip away from a held-out text would make it no test). Returns {"holdout_accuracy",
    "temperature", ...}."""
    K = grounder.num_modes
    rng = np.random.default_rng(seed)
    keys = [t for t in pairs if t not in copies]
    order = rng.permutation(len(keys))
    n_hold = max(len(keys) // 10, 1)
    hold = [keys[i] for i in order[:n_hold]]
    fit = [keys[i] for i in order[n_hold:]]
    for k in set(pairs.values()) - {pairs[t] for t in fit}:  # every class keeps a text to learn
        t = next(t for t in hold if pairs[t] == k)
        hold.remove(t)
        fit.append(t)
    hold = hold or list(fit)  # nothing to hold out: the temperature is fit on the training texts
    trained = set(fit)
    fit += [c for c, t in copies.items() if c in pairs and t in trained]
    tok, mask = _padded(fit, model_path)
    lengths = mask.sum(1)
    y = torch.tensor([pairs[t] for t in fit])
    # each class weighted equally: off-task sentences must not outvote a mode
    counts = torch.bincount(y, minlength=K + 1).float().clamp_min(1.0)
    weight = counts.sum() / (counts * (K + 1))
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        opt = torch.optim.AdamW(grounder.parameters(), lr=2e-3, weight_decay=1e-2)
        grounder.train()
        for _ in range(steps):
            idx = torch.randint(len(fit), (min(batch_size, len(fit)),), generator=gen)
            T = int(lengths[idx].max())  # the batch's longest text: no all-padding columns
            m = mask[idx, :T] & (torch.rand(len(idx), T, generator=gen) > 0.1)  # token dropout
            m[:, 0] = True  # keep [CLS]: no sentence is left empty
            loss = nn.functional.nll_loss(grounder(tok[idx, :T], m), y[idx], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    grounder.eval()
    tok_h, mask_h = _padded(hold, model_path)
    y_h = torch.tensor([pairs[t] for t in hold])
    with torch.no_grad():
        grid, nll = torch.linspace(0.25, 4.0, 76), []
        for t in grid:
            grounder.temperature.fill_(float(t))
            nll.append(nn.functional.nll_loss(grounder(tok_h, mask_h), y_h))
        grounder.temperature.fill_(float(grid[torch.stack(nll).argmin()]))
        acc = float((grounder(tok_h, mask_h).argmax(-1) == y_h).float().mean())
    return {
        "texts": len(fit),
        "holdout_texts": len(hold),
        "holdout_accuracy": acc,
        "temperature": float(grounder.temperature),
        "final_loss": float(loss.detach()),
    }


@torch.no_grad()
def ground(grounder: Grounder, texts: Sequence[str], model_path: str = "") -> np.ndarray:
    """(N, K + 1) probabilities per text; column K is "not a command for this task"."""
    tok, mask = _padded([str(t) for t in texts], model_path)
    device = next(grounder.parameters()).device  # a run trained on a GPU may be loaded there
    was = grounder.training
    grounder.eval()
    probs = grounder(tok.to(device), mask.to(device)).exp().cpu().numpy()
    grounder.train(was)
    return probs


def decide(probs: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(N,) mode per row, -1 where refused (off-task wins or best mode < threshold), and the
    (N,) confidence: the best mode's probability."""
    K = probs.shape[1] - 1
    best = probs[:, :K].argmax(1)
    conf = probs[np.arange(len(probs)), best]
    refused = (probs.argmax(1) == K) | (conf < threshold)
    return np.where(refused, -1, best), conf


THRESHOLDS = (0.5, 0.6, 0.7)  # the grid a phrasing set chooses policy.grounding_threshold from
MAX_WRONG, MIN_OFF_TASK = 0.05, 0.95  # ... as few refusals as these allow (`choose_threshold`)


def threshold_curve(lines: Sequence[dict], grid: Sequence[float] = THRESHOLDS) -> list[dict]:
    """What a labelled phrasing set (`ground_lines`' "lines") would give at each threshold of
    `grid`, read by `decide` from each line's confidence and off-task probability: the share of
    commanded lines grounded right and wrong (the rest are refused), and the share of off-task
    lines refused."""
    probs = np.array([[x["confidence"], x["off_task_probability"]] for x in lines])  # (N, 2)
    best = np.array([x["best"] for x in lines], dtype=object)
    mode = np.array([x["mode"] for x in lines], dtype=object)
    cmd, off = mode != None, mode == None  # noqa: E711 (elementwise)
    curve = []
    for t in grid:
        refused = decide(probs, t)[0] < 0  # (N,)
        right, wrong = ~refused & (best == mode), ~refused & (best != mode)
        curve.append({
            "threshold": float(t),
            "accuracy": float(right[cmd].mean()) if cmd.any() else None,
            "wrong": float(wrong[cmd].mean()) if cmd.any() else None,
            "off_task_refused": float(refused[off].mean()) if off.any() else None,
        })  # fmt: skip
    return curve


def choose_threshold(
    curve: Sequence[dict], max_wrong: float = MAX_WRONG, min_off_task: float = MIN_OFF_TASK
) -> float:
    """The lowest threshold of `threshold_curve` at which at most `max_wrong` of the commanded
    lines go the wrong way and at least `min_off_task` of the off-task ones are refused (the
    highest threshold when none qualifies): as few refusals as a silent wrong route allows."""

    def fits(c: dict) -> bool:
        wrong, off = c["wrong"], c["off_task_refused"]
        return (wrong is None or wrong <= max_wrong) and (off is None or off >= min_off_task)

    ok = [c["threshold"] for c in curve if fits(c)]
    return min(ok) if ok else max(c["threshold"] for c in curve)


# ---------------------------------------------------------------------------- instruction files


PHRASINGS = Path(importlib.util.find_spec("envs").origin).resolve().parent / "phrasings"
OFF_TASK = "-"  # the mode field of a line that commands nothing (it should be refused)


def task_of(env_id: str, env_kwargs: dict | None = None) -> str | None:
    """The diffpolicy task behind `env_id` (reach_around, reach_around_maze, pick), or None."""
    from envs import make_env

    env = make_env(env_id, **(env_kwargs or {}))
    try:
        return getattr(env.unwrapped, "task_name", None)
    finally:
        env.close()


def read_instructions(path: str | Path, mode_names: Sequence[str]) -> list[tuple[int | None, str]]:
    """Lines "MODE<TAB>TEXT" -> [(mode index or None for "-", text)]. MODE is a mode name or
    index; "-" marks an off-task sentence. Blank lines and lines starting with "#" are skipped.
    UserError naming the file and line for a malformed line, an unknown mode or an empty text."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read instructions file {p}: {type(e).__name__}") from None
    names = {str(n): k for k, n in enumerate(mode_names)}
    by_index = not any(n.isascii() and n.isdigit() for n in names)  # "1" is a name, or an index
    known = ", ".join(list(names)[:6]) + (", ..." if len(names) > 6 else "")
    out = []
    for no, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line.count("\t") != 1:
            raise UserError(f"{p} line {no}: expected MODE<TAB>TEXT (one tab), got {line[:60]!r}")
        mode, text = (x.strip() for x in line.split("\t"))
        if not text:
            raise UserError(f"{p} line {no}: empty instruction text")
        if mode == OFF_TASK:
            out.append((None, text))
        elif mode in names:
            out.append((names[mode], text))
        elif by_index and re.fullmatch(r"[0-9]+", mode) and int(mode) < len(mode_names):
            out.append((int(mode), text))
        else:
            raise UserError(
                f"{p} line {no}: unknown mode {mode!r} (this run's modes: {known}; "
                f"or {OFF_TASK} for an off-task sentence)"
            )
    if not out:
        raise UserError(f"{p} has no instruction lines")
    return out


def instruction_set(
    name: str | Path, env_id: str, mode_names: Sequence[str], demos=None, per_mode: int = 20
) -> list[tuple[int | None, str]]:
    """[(mode or None, text)] of a named set or a file.

    "train": up to `per_mode` of the training dataset's own phrasings per mode (`demos`);
    "val" / "test": the task's files envs/phrasings/<task>_<split>.tsv plus the off-task file
    off_task_<split>.tsv; a Path (or any other string) is a file (`read_instructions`).
    """
    if isinstance(name, Path):
        return read_instructions(name, mode_names)
    if name == "train":
        if demos is None:
            raise UserError("--instructions train needs the run's training dataset")
        seen: dict[int, list[str]] = {}
        for e in demos.episodes:
            for t in (e.instruction, *e.paraphrases):
                if t and e.mode >= 0 and t not in seen.setdefault(e.mode, []):
                    seen[e.mode].append(t)
        rows = [(k, t) for k in sorted(seen) for t in seen[k][:per_mode]]
        if not rows:
            raise UserError("the training dataset has no instructions with mode labels")
        return rows
    if name in ("val", "test"):
        task = task_of(env_id)
        path = PHRASINGS / f"{task}_{name}.tsv"
        if task is None or not path.exists():
            raise UserError(f"no packaged {name} phrasings for {env_id}: use --instructions-file")
        return read_instructions(path, mode_names) + read_instructions(
            PHRASINGS / f"off_task_{name}.tsv", mode_names
        )
    return read_instructions(name, mode_names)
