"""Language instructions per task and mode, split into train and held-out paraphrases.

``TRAIN_TEMPLATES[task][mode]`` (>= 3 strings) are used when collecting demonstrations;
``HELDOUT_TEMPLATES[task][mode]`` (>= 2 strings, disjoint from train) are only for testing
generalisation to unseen phrasings. Tasks: ``reach_around``, ``reach_around_maze``, ``pick``.
Maze instructions are composed from per-row phrases for all 24 routes.
"""

from __future__ import annotations

import numpy as np

from envs.reach_around import _gap_letters, make_layout, mode_to_gaps

_REACH_TRAIN = {
    0: [
        "go around the obstacle on the left",
        "pass left of the pillar",
        "take the left route around the post",
        "reach the goal going left of the obstacle",
        "go past with the obstacle on your right side",
        "leave the pillar to your right",
    ],
    1: [
        "go around the obstacle on the right",
        "pass right of the pillar",
        "take the right route around the post",
        "reach the goal going right of the obstacle",
        "go past with the obstacle on your left side",
        "leave the pillar to your left",
    ],
}
_REACH_HELDOUT = {
    0: ["steer to the left side of the cylinder", "keep the obstacle on your right"],
    1: ["steer to the right side of the cylinder", "keep the obstacle on your left"],
}

_ORDINALS = ("first", "second", "third")
# Per gap letter, phrases in two styles (train style A/B, held-out style C).
_GAP_PHRASES = {
    "L": ("left of the {o} post", "on the left at the {o} row", "to the left side in the {o} row"),
    "R": (
        "right of the {o} post",
        "on the right at the {o} row",
        "to the right side in the {o} row",
    ),
    "M": (
        "through the middle of the {o} row",
        "between the posts of the {o} row",
        "down the centre of the {o} row",
    ),
    "M1": (
        "through the left gap of the {o} row",
        "between the first two posts of the {o} row",
        "via the inner left opening of the {o} row",
    ),
    "M2": (
        "through the right gap of the {o} row",
        "between the last two posts of the {o} row",
        "via the inner right opening of the {o} row",
    ),
}
_MAZE_FRAMES_TRAIN = (
    "go {a}, {b}, then {c}",
    "pass {a}, then {b}, and finally {c}",
    "move {a}, {b} and {c}",
)
_MAZE_FRAMES_HELDOUT = ("navigate {a}; after that {b}; end {c}", "weave {a}, next {b}, last {c}")


def _maze_templates() -> tuple[dict, dict]:
    layout = make_layout("maze")
    train: dict[int, list[str]] = {}
    heldout: dict[int, list[str]] = {}
    n_modes = len(layout["mode_names"])
    for mode in range(n_modes):
        gaps = mode_to_gaps(mode, layout)
        letters = [_gap_letters(len(row))[g] for row, g in zip(layout["rows"], gaps)]

        def parts(style: int, letters=letters) -> list[str]:
            return [
                _GAP_PHRASES[ltr][style].format(o=_ORDINALS[k]) for k, ltr in enumerate(letters)
            ]

        train[mode] = [
            f.format(a=a, b=b, c=c) for f in _MAZE_FRAMES_TRAIN for a, b, c in (parts(0), parts(1))
        ]
        heldout[mode] = [
            f.format(a=a, b=b, c=c) for f in _MAZE_FRAMES_HELDOUT for a, b, c in (parts(2),)
        ]
    return train, heldout


_MAZE_TRAIN, _MAZE_HELDOUT = _maze_templates()

_PICK_TRAIN = {
    0: ["pick up the red cube", "lift the red block", "grab the red cube and raise it"],
    1: ["pick up the blue cube", "lift the blue block", "grab the blue cube and raise it"],
}
_PICK_HELDOUT = {
    0: ["raise the crimson box off the table", "take hold of the red one and lift it"],
    1: ["raise the navy box off the table", "take hold of the blue one and lift it"],
}

TRAIN_TEMPLATES: dict[str, dict[int, list[str]]] = {
    "reach_around": _REACH_TRAIN,
    "reach_around_maze": _MAZE_TRAIN,
    "pick": _PICK_TRAIN,
}
HELDOUT_TEMPLATES: dict[str, dict[int, list[str]]] = {
    "reach_around": _REACH_HELDOUT,
    "reach_around_maze": _MAZE_HELDOUT,
    "pick": _PICK_HELDOUT,
}


def sample_instruction(task: str, mode: int, rng: np.random.Generator) -> str:
    """A random train-split instruction for ``mode`` of ``task``."""
    if task not in TRAIN_TEMPLATES:
        raise ValueError(f"task={task!r} must be one of {sorted(TRAIN_TEMPLATES)}")
    templates = TRAIN_TEMPLATES[task]
    if mode not in templates:
        raise ValueError(f"mode={mode} must be in [0, {len(templates)}) for task {task!r}")
    options = templates[mode]
    return options[int(rng.integers(len(options)))]
