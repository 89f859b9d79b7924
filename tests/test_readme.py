"""Every number in the README's tables comes from a results file under benchmarks/results."""

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RA = "diffpolicy/ReachAround-v0"  # the task of the default config
MEASURED = re.compile(r"(?<![\w.])\d+\.\d{3}(?![\w.])")  # how the scripts print a measured value


def numeric_leaves(node) -> list[float]:
    if isinstance(node, bool):
        return []
    if isinstance(node, (int, float)):
        return [float(node)]
    if isinstance(node, dict):
        return [x for v in node.values() for x in numeric_leaves(v)]
    if isinstance(node, list):
        return [x for v in node for x in numeric_leaves(v)]
    return []


def readme_table_numbers() -> list[tuple[int, str]]:
    """(line number, "0.980") for every measured-looking number in a table cell after the
    first column of README.md."""
    out = []
    for i, line in enumerate((ROOT / "README.md").read_text().splitlines(), 1):
        if not line.startswith("|") or set(line) <= set("|- "):
            continue
        for cell in line.strip("|").split("|")[1:]:
            out += [(i, m) for m in MEASURED.findall(cell)]
    return out


def test_every_readme_table_number_is_in_a_results_file():
    values = set()
    for path in (ROOT / "benchmarks" / "results").glob("*.json"):
        values |= {round(x, 3) for x in numeric_leaves(json.loads(path.read_text()))}
    numbers = readme_table_numbers()
    assert len(numbers) > 50  # the tables are there (and the parser reads them)
    missing = [(line, text) for line, text in numbers if round(float(text), 3) not in values]
    assert not missing, f"README table numbers without a results file (line, value): {missing}"


SEED_KEY = re.compile(r"(^|_)seeds?$")  # seed, seeds, select_seeds, report_seed, ...


def seeds_named(node, key: str = "") -> set[int]:
    """Every seed a part of a results file names: ints under a seed key (also the keys of a
    dict under one), and the numbers after --seed / --seeds / --report-seed in a command."""
    out: set[int] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if SEED_KEY.search(k) and isinstance(v, dict):
                out |= {int(s) for s in v if str(s).isdigit()}
            out |= seeds_named(v, k)
    elif isinstance(node, list):
        for v in node:
            out |= seeds_named(v, key)
    elif isinstance(node, int) and not isinstance(node, bool) and SEED_KEY.search(key):
        out.add(node)
    elif isinstance(node, str) and key == "command":
        for group in re.findall(r"--(?:report-|select-)?seeds?[ =]((?:\d+ ?)+)", node):
            out |= {int(x) for x in group.split()}
    return out


def test_every_measured_default_was_chosen_on_other_seeds_than_reported():
    import yaml

    choices = yaml.safe_load((ROOT / "benchmarks" / "choices.yaml").read_text())
    assert len(choices) >= 5
    chosen_on = {s for c in choices for s in c["select"]["seeds"]}
    for c in choices:
        for part in ("select", "report"):
            path = ROOT / c[part]["results"]
            assert path.is_file(), (c["default"], part, path)
            node = json.loads(path.read_text())
            for k in c[part]["key"].split("."):  # the part of the file that holds these rows
                node = node[k]
            named = seeds_named(node)
            assert named == set(c[part]["seeds"]), (c["default"], part, c[part]["seeds"], named)
        report = set(c["report"]["seeds"])
        assert not report & set(c["select"]["seeds"]), c["default"]
        assert not report & chosen_on, (c["default"], report & chosen_on)  # never seen by a choice


def test_results_files_record_where_they_came_from():
    """Written by a script (command, git revision, machine), or saying why not."""
    missing = []
    for path in sorted((ROOT / "benchmarks" / "results").rglob("*.json")):
        d = json.loads(path.read_text())
        scripted = d.get("command") and d.get("git_revision") and d.get("machine")
        if not (scripted or isinstance(d.get("provenance"), str)):
            missing.append(path.relative_to(ROOT).as_posix())
    assert not missing, f"results files without command / git revision / machine: {missing}"


def test_the_reach_around_default_is_the_scripted_choice():
    """configs/reach_around.yaml samples as scripts/sampler_choice.py's rule chose from its
    validation rows (results/sampler_choice.json), and the rule re-applied gives that choice."""
    import importlib.util

    from diffpolicy import bench
    from diffpolicy.config import load_config

    spec = importlib.util.spec_from_file_location("sc", ROOT / "scripts" / "sampler_choice.py")
    sc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sc)
    d = json.loads((ROOT / "benchmarks" / "results" / "sampler_choice.json").read_text())
    for r in d["rows"]:  # the verdict stored per row is the rule's
        assert r["meets_targets_on_every_seed"] == all(sc.meets(s, RA) for s in r["seeds"].values())
    passing = [r for r in d["rows"] if r["meets_targets_on_every_seed"]]
    calls = bench.unet_calls
    best = min(passing, key=lambda r: (calls(r["sampler"], r["steps"]), -r["action_steps"]))
    assert (best["sampler"], best["steps"], best["action_steps"]) == tuple(
        d["chosen"][k] for k in ("sampler", "steps", "action_steps")
    )
    cfg = load_config(ROOT / "configs" / "reach_around.yaml", ())
    assert (cfg.policy.sampler, cfg.policy.num_inference_steps, cfg.control.n_action_steps) == (
        best["sampler"], best["steps"], best["action_steps"]
    )  # fmt: skip
    from diffpolicy.bench import FAST  # what the latency benchmarks call the default

    assert (cfg.policy.sampler, cfg.policy.num_inference_steps) == FAST


def test_the_reach_around_training_recipe_is_the_validated_choice():
    """configs/reach_around.yaml trains with the prediction type and the fewest steps whose run
    met the targets on validation seed 1000 (results/select/time_to_quality.json)."""
    import importlib.util

    from diffpolicy.config import load_config

    spec = importlib.util.spec_from_file_location("sc", ROOT / "scripts" / "sampler_choice.py")
    sc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sc)
    d = json.loads((ROOT / "benchmarks/results/select/time_to_quality.json").read_text())
    candidates = []
    for name in ("reach_around_epsilon", "reach_around_sample_prediction"):
        assert d[name]["seed"] == 1000
        kind = "sample" if "policy.prediction_type=sample" in d[name]["overrides"] else "epsilon"
        candidates += [(p["train"]["steps"], kind) for p in d[name]["points"] if sc.meets(p, RA)]
    cfg = load_config(ROOT / "configs" / "reach_around.yaml", ())
    assert min(candidates) == (cfg.train.steps, cfg.policy.prediction_type)


def test_targets_are_judged_per_task_and_a_missing_metric_fails():
    from diffpolicy.bench import TARGETS, meets

    good = {"success_rate": 0.96, "normalized_entropy": 0.97, "tv_to_demos": 0.04,
            "interpolation_rate": 0.01}  # fmt: skip
    assert meets(good, RA) and not meets(good | {"tv_to_demos": 0.06}, RA)
    assert not meets(good | {"tv_to_demos": None}, RA)  # no demos to compare with: not met
    maze = "diffpolicy/ReachAroundMaze-v0"  # 0.97 success, and TV is not a maze target
    assert not meets(good, maze) and meets(good | {"success_rate": 0.98, "tv_to_demos": 0.5}, maze)
    assert meets(good | {"success_rate": 0.91, "tv_to_demos": 0.09}, "diffpolicy/Pick-v0")
    assert set(TARGETS) == {RA, maze, "diffpolicy/Pick-v0"}
