"""Language grounding (diffpolicy/grounding.py, envs/instructions.py): the paraphrase grammar,
the calibrated instruction -> mode classifier with its refusal, instruction files and the
packaged validation / test phrasings (fast tier: fake encoder)."""

import json

import numpy as np
import pytest
import torch

from diffpolicy.errors import UserError
from diffpolicy.grounding import (
    PHRASINGS,
    Grounder,
    choose_threshold,
    decide,
    fit_grounder,
    ground,
    instruction_set,
    mode_factors,
    read_instructions,
    threshold_curve,
)
from envs.instructions import (
    NUM_MODES,
    TASKS,
    misspell,
    off_task_sentences,
    paraphrases,
    sample_instruction,
)
from envs.reach_around import make_layout, mode_to_gaps

MAZE_NAMES = make_layout("maze")["mode_names"]
NAMES = {
    "reach_around": ["left", "right"],
    "pick": ["red", "blue"],
    "reach_around_maze": MAZE_NAMES,
}


# ----------------------------------------------------------------------------------- grammar


@pytest.mark.parametrize("task", TASKS)
def test_grammar_gives_many_distinct_paraphrases_per_mode_and_none_shared(task):
    rng = np.random.default_rng(0)
    per_mode = [set(paraphrases(task, k, rng, 300)) for k in range(NUM_MODES[task])]
    assert all(len(p) == 300 for p in per_mode)  # the grammar does not run out
    for i in range(len(per_mode)):
        for j in range(i):
            assert not per_mode[i] & per_mode[j], (i, j, sorted(per_mode[i] & per_mode[j])[:3])
    off = set(off_task_sentences(task, rng, 300))
    assert len(off) == 300 and not off & set().union(*per_mode)
    with pytest.raises(ValueError, match="must be in"):
        sample_instruction(task, NUM_MODES[task], rng)


def test_grammar_phrases_the_obstacle_side_and_negations_the_right_way():
    rng = np.random.default_rng(1)
    left = paraphrases("reach_around", 0, rng, 2000)
    # "keep the pillar on your right" and "avoid the right side" command the left route
    assert any("on your right" in t for t in left) and any(
        "avoid the right" in t.lower() for t in left
    )
    # ... and no sentence puts it on your left, but to say it must not end up there
    assert not any("on your left" in t and "don't let" not in t.lower() for t in left)


def test_misspell_makes_one_slip_in_a_long_word_and_leaves_short_ones():
    import difflib

    rng = np.random.default_rng(5)
    text = "Go not left of the pillar, red one!"
    out = [misspell(text, rng) for _ in range(200)]
    again = np.random.default_rng(5)
    assert len(set(out)) > 50 and out == [misspell(text, again) for _ in range(200)]  # seeded
    for t in out:
        changed = [(a, b) for a, b in zip(text.split(), t.split()) if a != b]
        assert len(t.split()) == len(text.split()) and len(changed) <= 1, t
        for a, b in changed:  # a word of four letters or more, its first letter kept
            assert len(a.strip(",!")) >= 4 and a[0] == b[0], (a, b)
            assert difflib.SequenceMatcher(None, a, b).ratio() >= 0.6, (a, b)
    assert misspell("go to red", rng) == "go to red"  # nothing long enough to slip


def test_maze_grammar_tells_a_gap_by_where_the_row_posts_stay():
    rng = np.random.default_rng(2)
    texts = paraphrases("reach_around_maze", MAZE_NAMES.index("L-L-M1"), rng, 3000)
    # left of the pair: both its posts on your right; the left inner gap of three: 1 left, 2 right
    assert any("pair on your right" in t for t in texts)
    assert any(
        "one post of the" in t and "on your left and two posts on your right" in t for t in texts
    )
    assert not any("two posts of the" in t and "on your left and one post" in t for t in texts)


def test_posts_side_counts_the_posts_on_each_side_of_every_gap():
    """Gap g of a row of n posts (0 = left of all) leaves g posts on your left, n - g on your
    right."""
    import re

    from envs.instructions import _posts_side

    rng = np.random.default_rng(4)
    count = {"one": 1, "two": 2}
    for n in (1, 2, 3):
        for g in range(n + 1):
            for _ in range(100):
                t = _posts_side(n, g, "row", rng)
                if g in (0, n):  # every post on one side
                    assert t.endswith("your " + ("right" if g == 0 else "left")), t
                    assert ("both" in t) <= (n == 2) and ("all three" in t) <= (n == 3), t
                    continue
                if "each side" in t or "either side" in t:  # one post on each side
                    assert n == 2 and g == 1, t
                    continue
                pairs = re.findall(r"\b(one|two)\b(?:(?!your).)*your (left|right)", t)
                side = {where: count[k] for k, where in pairs}
                assert side == {"left": g, "right": n - g}, t


def test_no_evidence_sentences_name_no_mode():
    """The off-task class holds ReachAround commands with the side word replaced: a reader must
    find that word to claim a route."""
    import re

    from envs.instructions import _colour_words, _no_evidence, _survey_colours

    rng = np.random.default_rng(3)
    sides = re.compile(r"\b(left|right)|clockwise")
    ra = [_no_evidence("reach_around", rng) for _ in range(300)]
    assert len(set(ra)) > 200 and not any(sides.search(t.lower()) for t in ra)
    survey = _survey_colours()  # red and blue names from the colour survey
    assert len(survey["red"]) >= 20 and len(survey["blue"]) >= 20
    for c, other in (("red", "blue"), ("blue", "red")):  # no name of one says the other
        assert not any(other in re.findall(r"[a-z]+", n) for n in survey[c])
        assert not set(survey[c]) & set(_colour_words(other))
    assert _no_evidence("pick", rng) == _no_evidence("reach_around_maze", rng) == ""


def test_mode_factors_follow_the_mode_names():
    assert mode_factors(MAZE_NAMES) == [2, 3, 4]
    assert mode_factors(["left", "right"]) == [2]
    assert mode_factors(["a-b", "a-c", "b-c"]) == [3]  # not every combination: one choice
    # the mixed radix of the names is the maze's own mode numbering
    digits = np.stack(np.unravel_index(np.arange(24), [2, 3, 4]), axis=1)
    layout = make_layout("maze")
    assert [list(mode_to_gaps(k, layout)) for k in range(24)] == digits.tolist()


# -------------------------------------------------------------------------------- classifier


def test_factored_grounder_gives_a_distribution_over_routes_and_off_task():
    torch.manual_seed(0)
    g = Grounder(24, dim=16, factors=[2, 3, 4], members=2).eval()
    tokens, mask = torch.randn(5, 7, 16), torch.ones(5, 7, dtype=torch.bool)
    mask[2, 4:] = False
    logp = g(tokens, mask)
    assert logp.shape == (5, 25)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(5))
    with pytest.raises(ValueError, match="multiply"):
        Grounder(24, dim=16, factors=[2, 3])


def test_decide_refuses_off_task_and_unsure_rows():
    probs = np.array([[0.9, 0.05, 0.05], [0.55, 0.4, 0.05], [0.2, 0.1, 0.7], [0.1, 0.85, 0.05]])
    modes, conf = decide(probs, threshold=0.7)
    assert modes.tolist() == [0, -1, -1, 1]
    np.testing.assert_allclose(conf, [0.9, 0.55, 0.2, 0.85])


def test_threshold_curve_rereads_a_set_as_decide_would_and_chooses_the_lowest_safe_one():
    """Each threshold's rates are those `decide` gives on the same probabilities; the choice is
    the lowest threshold with at most 5% wrong routes and 95% of off-task lines refused."""
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3) * 0.5, size=400)  # 2 modes + off-task
    labels = [None if i % 4 == 0 else int(rng.integers(2)) for i in range(400)]
    lines = [
        {"mode": m, "best": int(p[:2].argmax()), "confidence": float(p[:2].max()),
         "off_task_probability": float(p[2])}
        for m, p in zip(labels, probs)
    ]  # fmt: skip
    curve = threshold_curve(lines, grid=(0.3, 0.6, 0.9))
    for c in curve:
        modes, _ = decide(probs, c["threshold"])
        cmd = [i for i, m in enumerate(labels) if m is not None]
        off = [i for i, m in enumerate(labels) if m is None]
        assert c["accuracy"] == pytest.approx(np.mean([modes[i] == labels[i] for i in cmd]))
        wrong = np.mean([modes[i] not in (labels[i], -1) for i in cmd])
        assert c["wrong"] == pytest.approx(wrong)
        assert c["off_task_refused"] == pytest.approx(np.mean([modes[i] < 0 for i in off]))
    assert curve[0]["accuracy"] >= curve[-1]["accuracy"] and curve[0]["wrong"] > 0.05
    rows = lambda *r: [dict(zip(("threshold", "wrong", "off_task_refused"), x)) for x in r]  # noqa: E731
    assert choose_threshold(rows((0.5, 0.08, 0.99), (0.6, 0.04, 0.99), (0.7, 0.01, 1.0))) == 0.6
    assert choose_threshold(rows((0.5, 0.01, 0.90), (0.6, 0.01, 0.96), (0.7, 0.0, 1.0))) == 0.6
    assert choose_threshold(rows((0.5, 0.2, 0.5), (0.7, 0.1, 0.6))) == 0.7  # none qualifies
    assert choose_threshold(rows((0.5, 0.0, None), (0.7, 0.0, None))) == 0.5  # no off-task


def _words(rng, side):
    verb = ["go", "pass", "move", "head", "steer", "swing"][rng.integers(6)]
    noun = ["pillar", "post", "pole", "column"][rng.integers(4)]
    return f"{verb} {side} of the {noun}"


def test_fitted_grounder_reads_unseen_sentences_and_refuses_off_task(fake_encoder):
    """Trained on "VERB left/right of the NOUN" and off-task chores, it grounds unseen
    combinations of those words and refuses unseen off-task sentences."""
    rng = np.random.default_rng(0)
    texts, labels = [], []
    for _ in range(300):
        k = int(rng.integers(2))
        texts.append(_words(rng, ["left", "right"][k]))
        labels.append(k)
    chores = [
        f"{v} the {o}"
        for v in ("wash", "open", "fold", "cook")
        for o in ("door", "dishes", "laundry", "dinner")
    ]
    g = Grounder(2, dim=16, members=2)
    info = fit_grounder(g, texts, labels, chores, fake_encoder.path, seed=0, steps=150)
    assert len(info["members"]) == 2
    assert info["holdout_accuracy"] >= 0.9, info
    unseen = ["go left of the column please", "steer right of the pillar now"]
    off = ["paint the fence", "what time is it"]
    probs = ground(g, unseen + off, fake_encoder.path)
    modes, _ = decide(probs, 0.7)
    assert modes.tolist() == [0, 1, -1, -1], probs.round(2)
    assert not any(p.requires_grad for p in g.parameters())  # frozen after fitting
    # a mode with a single phrasing is never held out of every member's training
    g1 = Grounder(2, dim=16, members=3)
    fit_grounder(g1, ["go left", "go right"], [0, 1], chores, fake_encoder.path, seed=0, steps=60)
    p1 = ground(g1, ["go left", "go right"], fake_encoder.path)
    assert p1[:, :2].argmax(1).tolist() == [0, 1], p1.round(2)


def test_a_misspelled_copy_is_never_held_out_and_trains_only_with_its_original(fake_encoder):
    from diffpolicy.grounding import Reader, fit_reader

    rng = np.random.default_rng(1)
    originals = {_words(rng, ["left", "right"][k % 2]) + f" {k}": k % 2 for k in range(40)}
    copies = {t + "x": t for t in originals}  # one slip away from its original
    pairs = {**originals, **{c: originals[t] for c, t in copies.items()}}
    info = fit_reader(Reader(2, dim=16), pairs, fake_encoder.path, 0, 5, 16, copies)
    assert info["holdout_texts"] == 4 and info["texts"] == 36 + 36  # 36 originals, their copies
    plain = fit_reader(Reader(2, dim=16), originals, fake_encoder.path, 0, 5, 16, {})
    assert plain["holdout_texts"] == 4 and plain["texts"] == 36  # no copies: the split as ever


# --------------------------------------------------------------------------- instruction files


def test_instruction_files_name_the_bad_line(tmp_path):
    f = tmp_path / "mine.tsv"
    f.write_text("left\tgo left\n\n# comment\n1\tgo right\n-\tmake me a sandwich\n")
    assert read_instructions(f, ["left", "right"]) == [
        (0, "go left"),
        (1, "go right"),
        (None, "make me a sandwich"),
    ]
    for body, match in [
        ("left\tgo left\nright go right\n", "line 2: expected MODE<TAB>TEXT"),
        ("left\tgo left\nup\tgo up\n", "line 2: unknown mode 'up'"),
        ("left\t  \n", "line 1: empty instruction text"),
        ("# nothing\n", "no instruction lines"),
        ("left\ta\tb\n", "line 1: expected MODE<TAB>TEXT"),
    ]:
        f.write_text(body)
        with pytest.raises(UserError, match=match):
            read_instructions(f, ["left", "right"])
    f.write_text("\ufeffleft\tgo left\n", encoding="utf-8")  # saved with a byte-order mark
    assert read_instructions(f, ["left", "right"]) == [(0, "go left")]
    f.write_text("1\tgo to one\n0\tgo to zero\n")  # names that are digits are names, not indices
    with pytest.raises(UserError, match="line 2: unknown mode '0'"):
        read_instructions(f, ["1", "2"])
    f.write_text("\u00b2\tsquared\n")
    with pytest.raises(UserError, match="line 1: unknown mode"):
        read_instructions(f, ["left", "right"])
    f.write_bytes(b"left\t\xff\xfe go\n")
    with pytest.raises(UserError, match="cannot read"):
        read_instructions(f, ["left", "right"])


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("split", ["val", "test"])
def test_packaged_phrasings_parse_and_cover_every_mode(task, split):
    """Format only: the phrasings' content is for measuring, not for tests to tune against."""
    rows = read_instructions(PHRASINGS / f"{task}_{split}.tsv", NAMES[task])
    assert {k for k, _ in rows} == set(range(NUM_MODES[task]))
    off = read_instructions(PHRASINGS / f"off_task_{split}.tsv", NAMES[task])
    assert off and all(k is None for k, _ in off)


def test_named_sets_resolve_for_the_task():
    rows = instruction_set("val", "diffpolicy/ReachAround-v0", NAMES["reach_around"])
    assert {k for k, _ in rows} == {0, 1, None}
    with pytest.raises(UserError, match="needs the run's training dataset"):
        instruction_set("train", "diffpolicy/ReachAround-v0", NAMES["reach_around"])


def test_language_run_keeps_its_grounder_and_the_cli_checks_files(
    fake_encoder, toy_demo_file, tmp_path, capsys
):
    """A classifier-grounded language run: the grounder travels in the checkpoint (same
    probabilities after loading), `ground` prints one line per sentence, and an instructions
    file with a bad line is one line naming it, exit 2."""
    from helpers import debug_cfg, one_line_exit_2

    from diffpolicy.checkpoint import load_policy
    from diffpolicy.cli import main
    from diffpolicy.train import train

    cfg = debug_cfg(
        toy_demo_file,
        "policy.condition=language",
        f"policy.language_model={fake_encoder.path}",
        "policy.grounding_steps=30",
        "policy.grounding_members=2",
        "train.steps=2",
        "train.checkpoint_every=2",
    )
    run = train(cfg, tmp_path / "run", progress=False)
    policy, loaded = load_policy(run)
    assert loaded.dims["mode_factors"] == [2]
    again, _ = load_policy(run)
    texts = ["go left", "wash the dishes"]
    np.testing.assert_allclose(
        ground(policy.cond_encoder.grounder, texts, fake_encoder.path),
        ground(again.cond_encoder.grounder, texts, fake_encoder.path),
    )
    capsys.readouterr()
    assert main(["ground", str(run), *texts]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0].endswith("\tgo left") and out[1].endswith("\twash the dishes")
    f = tmp_path / "mine.tsv"
    f.write_text("left\tgo left\nsideways\tgo sideways\n")
    one_line_exit_2(
        capsys, ["eval", str(run), "--instructions-file", str(f)], "line 2: unknown mode"
    )
    one_line_exit_2(capsys, ["ground", str(run), "--instructions-file", str(f)], "line 2")
    f.write_text("left\tgo left\n-\twash the dishes\n")
    js = tmp_path / "mine.json"
    assert main(["ground", str(run), "--instructions-file", str(f), "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "at threshold 0.6: accuracy" in out and "lowest threshold with" in out
    curve = json.loads(js.read_text())["threshold_curve"]
    assert [c["threshold"] for c in curve] == [0.5, 0.6, 0.7]
    one_line_exit_2(  # eval --threshold sets the run's policy.grounding_threshold
        capsys, ["eval", str(run), "--instruction", "go left", "--threshold", "1.5"],
        "policy.grounding_threshold=1.5",
    )  # fmt: skip


def test_an_instruction_the_grounder_refuses_is_a_clear_error(fake_encoder):
    """eval --instruction with a sentence the classifier reads as off-task: one UserError that
    names the sentence, the best guess and its confidence, instead of a silent route."""
    from types import SimpleNamespace

    from helpers import DEBUG

    from diffpolicy.config import load_config
    from diffpolicy.evaluate import make_condition_fn

    cfg = load_config(
        DEBUG, ["policy.condition=language", f"policy.language_model={fake_encoder.path}"]
    )
    g = Grounder(2, dim=16, members=1).eval()
    with torch.no_grad():
        g.members[0].mlp[-1].bias[-1] = 30.0  # the off-task logit wins for every sentence
    policy = SimpleNamespace(cond_encoder=SimpleNamespace(grounder=g))
    with pytest.raises(
        UserError, match=r"cannot ground 'make me a sandwich': best guess '(left|right)'"
    ):
        make_condition_fn(cfg, policy, None, "make me a sandwich", None, 2)
    with torch.no_grad():
        g.members[0].mlp[-1].bias.copy_(torch.tensor([0.0, 30.0, -30.0]))  # now: "right"
    fn, summary = make_condition_fn(cfg, policy, None, "go right", None, 2)
    assert fn(0)[0] == {"mode": 1} and summary["lines"][0]["grounded"] == "right"
