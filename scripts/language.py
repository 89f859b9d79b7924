"""Language grounding on phrasings nobody wrote into the grammar (results/language.json).

    python scripts/language.py reach_around --run RUN            # rollouts: train / val / test
                                                                 # phrasings + unconditional
    python scripts/language.py pick --dataset DEMOS              # text only: fit the grounding
                                                                 # classifier, ground val / test
    python scripts/language.py pick --dataset DEMOS --sets train val   # look at validation
    python scripts/language.py pick --dataset DEMOS --sets test        # then, once, at test
    python scripts/language.py --print-only                      # the README table
    python scripts/language.py --annotate                        # recount Pick's lines that name
                                                                 # the colour outside the grammar

Phrasing sets (grounding.instruction_set): "train" = the dataset's own grammar phrasings, "val"
= envs/phrasings/<task>_val.tsv (the grammar was chosen on these), "test" = <task>_test.tsv
(written apart from the grammar, used for nothing else). Train and val are read at the config's
policy.grounding_threshold; val then chooses the threshold test is read at
(grounding.choose_threshold: the lowest of 0.5 / 0.6 / 0.7 with at most 5% of val's commanded
lines read the wrong way and 95% of its off-task lines refused; the config's when val is not
among --sets), and records its threshold curve. With --run, each set
is a rollout evaluation: episode i commands the set's i-th commanded line in turn, a refused
line counts as a miss; its off-task lines are grounded only. Without a run, only the text-level
grounding is measured (an instruction -> mode classifier fit on DEMOS' paraphrases).
"""

import argparse
from types import SimpleNamespace

from diffpolicy.bench import markdown_table, read_result, train_budget, write_result
from diffpolicy.config import replace_values
from diffpolicy.evaluate import evaluate_run

SETS = ("train", "val", "test")


def text_only(task: str, dataset: str, config: str, sets=SETS) -> dict:
    """Fit the run's grounding classifier on `dataset` (no policy) and ground every set."""
    import time

    import torch

    from diffpolicy.config import load_config
    from diffpolicy.dataset import load_demos
    from diffpolicy.evaluate import ground_lines
    from diffpolicy.grounding import Grounder, instruction_set, mode_factors
    from diffpolicy.train import fit_grounding

    torch.set_num_threads(2)
    cfg = load_config(config, [f"data.dataset={dataset}"])
    demos = load_demos(dataset)
    names = list(demos.mode_names)
    torch.manual_seed(cfg.train.seed)  # reproducible initial weights (not a training run's)
    grounder = Grounder(
        len(names), factors=mode_factors(names), members=cfg.policy.grounding_members
    )
    t0 = time.perf_counter()
    info = fit_grounding(cfg, grounder, demos)
    out = {"fit": info | {"seconds": time.perf_counter() - t0, "dataset": dataset}}
    policy = SimpleNamespace(cond_encoder=SimpleNamespace(grounder=grounder))  # text only
    for name in sets:
        rows = instruction_set(name, cfg.env_id, names, demos)
        g, _ = ground_lines(policy, cfg, rows, names)
        if name == "val":  # the threshold the test set is read at is chosen here
            g |= chosen_on_val(g)
            cfg = replace_values(cfg, {"policy.grounding_threshold": g["chosen_threshold"]})
        if task == "pick" and name != "train":
            g["unseen_colour_words"] = unseen_colour_words(g)
        if name == "train" or task != "reach_around_maze":
            out[name] = g
            continue
        per_route: dict[str, list[bool]] = {}
        for line in g["lines"]:
            if line["mode"] is not None:
                per_route.setdefault(line["mode"], []).append(line["grounded"] == line["mode"])
        g["per_route_accuracy"] = {k: sum(v) / len(v) for k, v in per_route.items()}
        g["mean_route_accuracy"] = sum(g["per_route_accuracy"].values()) / len(per_route)
        out[name] = g
    return out


def unseen_colour_words(grounding: dict) -> dict:
    """Pick lines that name the colour in words outside the grammar's colour lists (no colour
    word or name of envs/instructions.py appears in them): how many, and how many grounded right."""
    import re

    from envs.instructions import colour_names

    words = {w for c in ("red", "blue") for w in colour_names(c)}
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, words), key=len)[::-1]) + r")\b")
    rows = [x for x in grounding["lines"] if x["mode"] is not None]
    unseen = [x for x in rows if not pattern.search(x["text"].lower())]
    right = sum(x["grounded"] == x["mode"] for x in unseen)
    return {"lines": len(unseen), "grounded_right": right / max(len(unseen), 1)}


def chosen_on_val(grounding: dict) -> dict:
    """The validation set's threshold curve and the threshold it chooses (grounding.py)."""
    from diffpolicy.grounding import choose_threshold, threshold_curve

    curve = threshold_curve(grounding["lines"])
    return {"threshold_curve": curve, "chosen_threshold": choose_threshold(curve)}


def rollouts(run: str, episodes: int, trained_on: str | None, sets=SETS) -> dict:
    out = {"budget": train_budget(run, trained_on)}  # "train" is the train phrasings
    threshold = None  # the run's own, until val chooses one
    for name in sets:
        r = evaluate_run(run, episodes, instructions=name, progress=False, threshold=threshold)
        out[name] = {k: v for k, v in r.items() if k != "records"}
        if name == "val":
            out[name] |= chosen_on_val(r["grounding"])
            threshold = out[name]["chosen_threshold"]
        print(f"{name}: accuracy {r['commanded_mode_accuracy']:.3f}", flush=True)
    r = evaluate_run(run, episodes, guidance=0.0, progress=False)
    out["unconditional"] = {k: v for k, v in r.items() if k != "records"}
    return out


def _rate(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def table(results: dict) -> str:
    rows = []
    for task, e in results.items():
        if not isinstance(e, dict) or "val" not in e:
            continue
        for name in [n for n in SETS if n in e]:
            r = e[name]
            g = r.get("grounding") or r
            roll = r.get("commanded_mode_accuracy")
            worst = r.get("commanded_mode_accuracy_worst_instruction")
            label = {
                "reach_around": "ReachAround-v0",
                "pick": "Pick-v0",
                "reach_around_maze": "ReachAroundMaze-v0",
            }[task.removesuffix("_text")]
            label += " (text only)" if task.endswith("_text") else ""
            rows.append([
                label, name, g["commanded_lines"], f"{g['threshold']:g}",
                "-" if roll is None else f"{roll:.3f}",
                "-" if roll is None else f"{r['commanded_success_rate']:.3f}",
                "-" if worst is None else f"{worst:.2f}",
                f"{g['text_accuracy']:.3f}", f"{g['refusal_rate']:.3f}",
                _rate(g.get("off_task_refusal_rate")),
                f"{e['unconditional']['normalized_entropy']:.3f}" if "unconditional" in e else "-",
            ])  # fmt: skip
    head = ["task", "phrasings", "lines", "threshold", "commanded-mode accuracy", "success",
            "worst line", "grounded right (text)", "refused", "off-task refused",
            "unconditional entropy"]  # fmt: skip
    return markdown_table(head, rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", nargs="?", help="reach_around | pick | reach_around_maze")
    p.add_argument("--run", help="a trained language run: roll out every phrasing set")
    p.add_argument("--dataset", help="without --run: fit the grounding on these demos only")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--trained-on", metavar="TEXT", help="where the run was trained")
    p.add_argument("--sets", nargs="+", choices=SETS, default=list(SETS))
    p.add_argument("--print-only", action="store_true")
    p.add_argument(
        "--annotate",
        action="store_true",
        help="add the Pick unseen-colour-word counts to the recorded text-only rows",
    )
    a = p.parse_args()
    a.sets = [s for s in SETS if s in a.sets]  # val, which chooses test's threshold, comes first
    results = read_result("language")
    if a.annotate:
        if "pick_text" not in results:
            p.error("no Pick text-only rows in language.json: run pick --dataset DEMOS first")
        for name in ("val", "test"):
            g = results["pick_text"][name]
            g["unseen_colour_words"] = unseen_colour_words(g)
            print(name, g["unseen_colour_words"])
        write_result("language", results)
        return
    if not a.print_only:
        if not a.task or bool(a.run) == bool(a.dataset):
            p.error("TASK and one of --run / --dataset are needed (or --print-only)")
        config = f"configs/{a.task}_lang.yaml"
        if a.run:
            entry = rollouts(a.run, a.episodes, a.trained_on, a.sets)
        else:
            entry = text_only(a.task, a.dataset, config, a.sets)
        key = a.task if a.run else f"{a.task}_text"
        fresh = "train" in a.sets  # a new run or fit: drop the old sets' numbers
        results[key] = entry if fresh else {**results.get(key, {}), **entry}
        write_result("language", results)
    print(table(read_result("language")))


if __name__ == "__main__":
    main()
