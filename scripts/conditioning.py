"""README's steering table: commanded-mode accuracy, success under command and the unconditional
branch of a trained mode run of one task (conditioning.json under TASK, others kept). Language
runs are measured by scripts/language.py (phrasings written apart from the grammar).

    python scripts/conditioning.py reach_around --mode-run RUN --guided 1.5
    python scripts/conditioning.py --print-only     # the table from results/conditioning.json"""

import argparse

from diffpolicy.bench import RESULTS, markdown_table, read_result, train_budget, write_result
from diffpolicy.checkpoint import load_run_config
from diffpolicy.evaluate import evaluate_run

EVALS = {  # entry -> (run, evaluate_run kwargs); with --guided G also ENTRY_wG for the commands
    "mode_all": ("mode", {"mode": "all"}),
    "mode_unconditional": ("mode", {"guidance": 0.0}),
}
SETTINGS = ("condition", "cond_dropout")  # of each run, kept with it


def pick(e: dict, name: str, guided: bool) -> dict | None:  # NAME, or NAME_wG if `guided`
    names = sorted(k for k in e if k == name or (guided and k.startswith(f"{name}_w")))
    return e[names[-1]] if names else None


def accuracy(r: dict | None) -> str:
    w = "" if r is None or r["guidance"] == 1 else f" (w {r['guidance']:g})"
    return "not trained" if r is None else f"{r['commanded_mode_accuracy']:.3f}{w}"


def table(results: dict) -> str:  # mode ids at guidance 1
    rows, success = [], []
    for task, e in [(k, e) for k, e in results.items() if isinstance(e, dict) and "mode_all" in e]:
        cells = [pick(e, "mode_all", False)]
        success += [r["commanded_success_rate"] for r in cells if r]
        uncond = [e[k]["normalized_entropy"] for k in ("mode_unconditional",) if k in e]
        n = len(e["mode_all"]["mode_probs"])
        name = e["mode_all"].get("env_id") or "".join(map(str.title, task.split("_"))) + "-v0"
        name = name.split("/")[-1] + (f" ({n} routes)" if n > 2 else "")
        rows.append([name, *map(accuracy, cells), " / ".join(f"{x:.3f}" for x in uncond)])
    head = ["task", "mode ids"]
    note = f"success under command: {min(success, default=float('nan')):.3f} or higher"
    return markdown_table([*head, "unconditional entropy"], rows) + "\n\n" + note


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("task", nargs="?", help="key in the results file, e.g. reach_around")
    p.add_argument("--mode-run")
    p.add_argument("--episodes", type=int, default=200)
    p.add_argument("--action-steps", type=int, help="Ta at evaluation (default: the run's)")
    p.add_argument("--guided", type=float, default=0.0, help="also evaluate commands at this scale")
    p.add_argument("--trained-on", metavar="TEXT", help="where the runs were trained, e.g. a GPU")
    p.add_argument("--results", default=str(RESULTS), help="directory of the results file")
    p.add_argument("--print-only", action="store_true", help="print the table, run nothing")
    a = p.parse_args()
    runs = {"mode": a.mode_run}
    todo = [(runs[k], name, kw) for name, (k, kw) in EVALS.items() if runs[k] and not a.print_only]
    g, w = {"guidance": a.guided}, f"_w{a.guided:g}"
    todo += [(r, n + w, kw | g) for r, n, kw in todo if a.guided and "unconditional" not in n]
    if todo and not a.task:
        p.error("TASK is needed to evaluate (or --print-only)")
    results = read_result("conditioning", a.results)
    for run, name, kw in todo:
        kw = kw | {"action_steps": a.action_steps, "progress": False}
        r = {k: v for k, v in evaluate_run(run, a.episodes, **kw).items() if k != "records"}
        c = {"config": {k: getattr(load_run_config(run).policy, k) for k in SETTINGS}}
        results.setdefault(a.task, {})[name] = r | {"train": train_budget(run, a.trained_on) | c}
        write_result("conditioning", results, a.results)  # after each evaluation
    print(table(read_result("conditioning", a.results)))


if __name__ == "__main__":
    main()
