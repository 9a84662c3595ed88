"""Render ``book/benchmarks.md`` from the JSON results in ``benchmarks/results/``.

The page is generated, never typed: rerun the benchmark scripts, then

    python benchmarks/make_benchmarks_page.py

Sections whose result file is missing say how to produce it.
"""
from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
GPU_RESULTS = RESULTS / "gpu"
PRETRAINED = ROOT / "diffusion_tutorial" / "pretrained"
PAGE = ROOT / "book" / "benchmarks.md"


def load(name: str):
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def fmt(v, digits: int = 4) -> str:
    if isinstance(v, float):
        if v != v:
            return "–"
        if abs(v) >= 1000 or (abs(v) < 1e-3 and v != 0):
            return f"{v:.2e}"
        return f"{v:.{digits}g}"
    return str(v)


def table(rows, columns, headers=None) -> str:
    headers = headers or columns
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def machine_line(res) -> str:
    m = res["machine"]
    parts = [f"{m.get('cores')}-core {m.get('cpu')}", f"torch {m.get('torch')}",
             f"{m.get('torch_threads')} torch thread(s)"]
    if "load_average_1min" in m:
        parts.append(f"1-min load average {m['load_average_1min']} at the start")
    if m.get("gpu"):
        parts.insert(0, m["gpu"])
    if m.get("note"):
        parts.append(m["note"])
    cmd = without_note(res["command"])
    code = f"`` {cmd} ``" if "`" in cmd else f"`{cmd}`"  # a command that itself holds backticks
    return f"*Measured {res['date']} on: " + ", ".join(parts) + f".* Reproduce: {code}"


LABEL_OPTIONS = ("--note", "--training-note")  # text shown on the page, not settings


def without_note(command: str) -> str:
    """The command without its label options (``--note``, ``--training-note``: their text is
    on the page already), which change nothing that is measured."""
    try:
        words = shlex.split(command)
    except ValueError:
        return command
    if not any(option in words for option in LABEL_OPTIONS):
        return command
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in LABEL_OPTIONS:
            skip = True
        else:
            kept.append(word)
    return shlex.join(kept)


def missing(script: str) -> str:
    return f"*Not measured yet: run `python benchmarks/{script}`.*"


def section_pretrained() -> list[str]:
    out = ["## The shipped models", ""]
    clf = PRETRAINED / "mnist_classifier.json"
    if clf.exists():
        c = json.loads(clf.read_text())
        cmds = c.get("commands", ["python -m diffusion_tutorial.classifier_train"])
        out += [f"**Classifier** (the yardstick for all metrics below): {c['parameters']:,} parameters, "
                f"trained on the {c['n_train']:,}-digit train split of `mnist-sample` by", "",
                "```\n" + "\n".join(cmds) + "\n```", "",
                f"Held-out accuracy {c['test_accuracy']:.4f} on its {c['n_test']} test digits; with "
                f"outlier exposure it calls {c.get('confident_share_on_uniform_noise', float('nan')):.1%} "
                "of uniform-noise images a digit with probability ≥ 0.9 (without it, nearly all)"
                + (f", and {c['confident_share_on_held_out_digits']:.1%} of the held-out real digits: "
                   "that is the ceiling of the confident share, what a perfect generator would score"
                   if "confident_share_on_held_out_digits" in c else "") + ".", ""]
    mod = PRETRAINED / "mnist.json"
    if mod.exists():
        m = json.loads(mod.read_text())
        met, tr = m.get("metrics", {}), m.get("training", {})
        out += [f"**Diffusion model** `load_pretrained(\"mnist\")`: a {m['parameters']:,}-parameter UNet "
                f"(EMA weights, stored as {m['dtype']}), trained with", "",
                f"```\n{m['command']}\n```", ""]
        if m.get("note"):
            out += [m["note"], ""]
        if tr.get("steps"):
            out += [f"It trained for {tr['steps']:,} steps ({(tr.get('train_seconds') or 0) / 60:.0f} "
                    f"minutes of training time; final loss {fmt(tr.get('final_loss_mean_last_200'))}).", ""]
        if met:
            rows = [met] + m.get("metrics_other_samplers", [])
            out += [f"Metrics of {met['n']} samples each, measured on the shipped weights:", "",
                    table(rows, ["sampler", "fid", "fid_floor", "confident_share", "confident_share_real",
                                 "class_entropy", "mean_max_prob"],
                          ["sampler", "classifier-FID", "real-vs-real floor", "confident share (p ≥ 0.9)",
                           "confident share of real digits", "class entropy (max 2.303)",
                           "mean max probability"]), ""]
    return out


def section_classifier() -> list[str]:
    res = load("classifier")
    out = ["## The yardstick: accuracy and the FID floor", ""]
    if not res:
        return out + [missing("bench_classifier.py"), ""]
    cols = [c for c in ("test set", "n", "accuracy", "confident_share") if c in res["accuracy"][0]]
    out += [machine_line(res), "", table(res["accuracy"], cols,
                                         [{"confident_share": "confident share (p ≥ 0.9)"}.get(c, c)
                                          for c in cols]), "",
            "The FID between two disjoint sets of n *real* digits is not 0: it is the noise floor "
            "of the estimate, and it shrinks as n grows. Compare FIDs only at the same n.", "",
            table(res["fid_floor_vs_n"], ["real digits", "n", "fid_floor_mean", "fid_floor_std"],
                  ["real digits", "n per set", "FID floor (mean of 3)", "std"]), ""]
    return out


def section_vs_diffusers() -> list[str]:
    out = ["## Against diffusers", ""]
    for name, title in (("vs_diffusers", "CPU"), ("vs_diffusers_cuda", "GPU")):
        res = load(name)
        if not res:
            if name == "vs_diffusers":
                out += [missing("bench_vs_diffusers.py"), ""]
            else:
                out += ["On a GPU (`python benchmarks/bench_vs_diffusers.py --device cuda`: the "
                        "35.7M-parameter DDPM CIFAR-10 UNet against diffusers' `UNet2DModel` of the same "
                        "size, bf16 autocast, channels_last, with and without `torch.compile`, with model "
                        "FLOP utilisation) the results are in the section on a GPU below.", ""]
            continue
        out += [f"### {title}", "", machine_line(res), "",
                "**(a) Sampler correctness.** Largest |ours − diffusers| over every timestep, on "
                "the same inputs (linear β, T = 1000, ε-prediction, no clipping; DDIM with "
                "`set_alpha_to_one=True`, `steps_offset=0`). diffusers computes ᾱ_t in float32; "
                "with ᾱ_t in float64, as ours, the two agree to float32 round-off.", "",
                table(res["correctness"], ["check", "diffusers alphas_cumprod", "max_abs_diff"]), "",
                "**(b) Sampling-loop overhead.** A 1x1-convolution model that costs next to "
                "nothing, so the time is the loop's own work (best of the repeats).", "",
                table(res["loop_overhead"], ["loop", "batch", "ours_ms_per_step", "diffusers_ms_per_step",
                                             "ours/diffusers"]), ""]
        c = res["training"]
        out += ["**(c) Training throughput**, our `UNet` against diffusers' `UNet2DModel` built to "
                f"the same design ({c['params_ours']:,} vs {c['params_diffusers']:,} parameters), "
                f"same data, batch {c['batch']}, AdamW, {c['precision']}"
                + (", `torch.compile`" if c.get("compiled") else "") + ", alternated in one process. "
                "A step is the forward pass, the backward pass and the optimizer update.", ""]
        if "rows" in c:
            cols = [k for k in ("model", "layout", "images_per_s", "ms_per_step", "conv_share", "mfu",
                                "gflop_per_image") if k in c["rows"][0]]
            heads = {"images_per_s": "images / s", "ms_per_step": "ms / step",
                     "conv_share": "share of time in convolutions", "mfu": "MFU",
                     "gflop_per_image": "GFLOP / image"}
            out += [table(c["rows"], cols, [heads.get(k, k) for k in cols]), "",
                    table([{"ratio": k, "value": v} for k, v in c["ratios"].items()], ["ratio", "value"]), ""]
            if "bound_if_only_convolutions_remained" in c:
                out += [conv_budget_text(c), ""]
        else:  # results written by an older version of the script
            out += [table([c], ["ours_images_per_s", "diffusers_images_per_s", "ours/diffusers"] +
                          [k for k in ("ours_mfu", "diffusers_mfu") if k in c]), ""]
    return out


def conv_budget_text(c: dict) -> str:
    """What the measured convolution share leaves for a faster implementation of the same UNet."""
    best = {m: min((r for r in c["rows"] if r["model"] == m), key=lambda r: r["ms_per_step"])
            for m in ("ours", "diffusers")}
    ours, theirs = best["ours"], best["diffusers"]
    conv_ms = ours["ms_per_step"] * ours["conv_share"]
    other_ms = ours["ms_per_step"] - conv_ms
    target_other = theirs["ms_per_step"] / 1.2 - conv_ms
    return ("Both models run the same convolutions, and convolutions take most of a step. Even if "
            "every other operation of ours cost nothing, ours could be at most "
            f"{c['bound_if_only_convolutions_remained']:.2f}x faster than diffusers in its faster "
            f"layout (Amdahl's law with the measured share). In ours ({ours['layout']}), "
            f"convolutions take {conv_ms:.0f} ms of a {ours['ms_per_step']:.0f} ms step; 1.2x "
            f"diffusers' {theirs['ms_per_step']:.0f} ms would leave {max(target_other, 0):.0f} ms "
            f"for everything else (group norms, activations, attention, the optimizer), which now "
            f"takes {other_ms:.0f} ms.")


def section_quality() -> list[str]:
    res = load("quality_vs_steps")
    out = ["## Quality against sampling steps", ""]
    if not res:
        return out + [missing("bench_quality_vs_steps.py"), ""]
    rows = res["rows"]
    out += [machine_line(res), "",
            "Every sampler of the package on the shipped model, at equal budgets of network "
            "evaluations (Heun takes two per step), all from the same x_T and with x̂_0 clipped "
            "to [−1, 1] as on the command line. The floor column is the real-vs-real FID at the "
            "same n; compare FIDs with each other and with it, not with published numbers.", "",
            table(rows, ["sampler", "eta", "steps", "evaluations", "n", "fid", "fid_floor",
                         "confident_share", "class_entropy", "ms_per_sample"],
                  ["sampler", "η", "steps", "network evaluations", "n", "classifier-FID",
                   "floor", "confident share", "class entropy", "ms / sample"]), ""]
    summary = res.get("few_steps_vs_ddpm1000")
    if summary:
        best = summary["rows"][0]
        verdict = "meets" if best["fid_ratio"] <= 1.1 else "misses"
        out += [f"**At most {summary['budget']} evaluations against DDPM-1000** (goal: FID within "
                f"10%): {summary['text']}. The best, {best['sampler']} with {best['evaluations']} "
                f"evaluations, {verdict} the goal in this single measurement.", ""]
        ddpm = next(r for r in rows if r["sampler"] == "DDPM")
        out += seed_spread_text(ddpm, res.get("model"))
    more = load("quality_vs_steps_more")
    if more and more.get("model") == res.get("model"):
        n = sorted({r["n"] for r in more["rows"]})
        out += [f"**More steps.** The same samplers at larger budgets, with {', '.join(map(str, n))} "
                "samples each (an FID at a smaller n sits higher, so compare these rows with each "
                "other and with their floor, not with the table above):", "", machine_line(more), "",
                table(more["rows"], ["sampler", "eta", "steps", "evaluations", "n", "fid", "fid_floor",
                                     "confident_share", "class_entropy", "ms_per_sample"],
                      ["sampler", "η", "steps", "network evaluations", "n", "classifier-FID",
                       "floor", "confident share", "class entropy", "ms / sample"]), ""]
    return out


def section_eta() -> list[str]:
    """DDIM-50 with eta = 0 against eta = 1 on networks trained for longer and longer: the
    less-trained snapshots (bench_quality_vs_steps.py --run) and the shipped model's metrics."""
    out = ["## η = 0 against η = 1 as the network trains", ""]
    rows = []
    for name, label in (("eta_base_step1000", "base recipe, 1,000 steps"),
                        ("eta_default_run", "the default run, 2,500 steps")):
        res = load(name)
        if not res:
            continue
        by_eta = {float(r["eta"]): r for r in res["rows"] if r["sampler"] == "DDIM"}
        if 0.0 in by_eta and 1.0 in by_eta:
            rows.append((label, by_eta[0.0], by_eta[1.0], machine_line(res)))
    shipped = PRETRAINED / "mnist.json"
    if shipped.exists():
        m = json.loads(shipped.read_text())
        found = {}
        for r in [m.get("metrics", {})] + m.get("metrics_other_samplers", []):
            run = r.get("settings", {})
            if run.get("sampler") == "ddim" and run.get("steps") == 50:
                found[run["eta"]] = r
        if 0.0 in found and 1.0 in found:
            rows.append((f"the shipped model, {m['training']['steps']:,} steps, cosine decay",
                         found[0.0], found[1.0], "*Measured on the shipped weights "
                         "(`scripts/export_pretrained.py --remeasure`, 2 torch threads).*"))
    if not rows:
        return out + [missing("bench_quality_vs_steps.py --steps 50 --samplers ddim:0,ddim:1 --run RUN"), ""]
    table_rows = [{"network": label, "n": a["n"], "fid0": a["fid"], "fid1": b["fid"],
                   "ratio": a["fid"] / b["fid"], "conf0": a["confident_share"],
                   "conf1": b["confident_share"]} for label, a, b, _ in rows]
    out += ["DDIM with 50 steps, deterministic (η = 0) and stochastic (η = 1), from the same x_T, "
            f"x̂_0 clipped; the same network architecture at {len(rows)} stages of training:", "",
            table(table_rows, ["network", "n", "fid0", "fid1", "ratio", "conf0", "conf1"],
                  ["network", "n", "FID, η = 0", "FID, η = 1", "FID ratio η = 0 / η = 1",
                   "confident share, η = 0", "confident share, η = 1"]), ""]
    out += [f"- {label}: {line}" for label, _, _, line in rows] + [""]
    ratios = [r["ratio"] for r in table_rows]
    if len(ratios) >= 2 and all(r > 1 for r in ratios):
        shrinking = all(a > b + 0.1 for a, b in zip(ratios, ratios[1:]))
        out += ["At every stage η = 1 gives the lower FID, the reverse of the DDIM paper's finding "
                "on CIFAR-10 with a much larger network; "
                + ("the gap shrinks as the network trains, which is consistent with the "
                   "error-correction argument of Karras et al. (chapter *Sampling* shows it on "
                   "data with a known answer)." if shrinking else
                   "the gap does not shrink steadily with training at these sample sizes."), ""]
    return out


def seed_spread_text(ddpm: dict, model: dict) -> list[str]:
    """The spread of a single FID over starting seeds, measured by ``--seeds``, next to the
    DDPM-1000 row of the main table (same model and n only)."""
    res = load("quality_vs_steps_seeds")
    if not res or not res.get("seed_spread") or res.get("model") != model:
        return []
    spread = [r for r in res["seed_spread"] if r["sampler"] != "DDPM" and r["n"] == ddpm["n"]]
    if not spread:
        return []
    out = ["**How much one FID moves with the starting noise.** The same sampler with "
           "different seeds for x_T (and for its noise):", "", machine_line(res), "",
           table(spread, ["sampler", "steps", "eta", "n", "seeds", "fid_mean", "fid_std",
                          "confident_share_mean", "confident_share_std"]), ""]
    for r in spread:
        rel = r["fid_std"] / ddpm["fid"]
        verdict = ("so one measurement cannot resolve a 10% difference" if rel > 0.05 else
                   "small enough for one measurement to resolve a 10% difference")
        out += [f"For {r['sampler']} with {r['steps']} steps the FID's standard deviation over "
                f"seeds is {rel:.0%} of DDPM-1000's FID at n = {r['n']}, {verdict}. Averaged "
                f"over the {r['seeds']} seeds it is {r['fid_mean']:.1f} ± {r['fid_std']:.1f}, "
                f"{r['fid_mean'] / ddpm['fid']:.2f}x DDPM-1000's {ddpm['fid']:.1f} (one seed), "
                f"with a confident share of {r['confident_share_mean']:.2f} ± "
                f"{r['confident_share_std']:.2f} against {ddpm['confident_share']:.2f}.", ""]
    return out


def section_recipes() -> list[str]:
    """Training recipes compared by quality against training steps (bench_recipes.py)."""
    out = ["## Training recipes: quality against training steps", ""]
    results = [json.loads(p.read_text()) for p in sorted((RESULTS / "recipes").glob("*.json"))]
    results = [r for r in results if "rows" in r and "recipe" in r]
    if not results:
        return out + [missing("bench_recipes.py"), ""]
    ev = results[0]["evaluation"]
    out += [f"Each run is `python -m diffusion_tutorial train` with the flags shown, its EMA "
            f"weights saved every few hundred steps; each snapshot is scored with {ev['n']} "
            f"samples of {ev['sampler']} ({ev['steps']} steps"
            + (f", η = {ev['eta']:g}" if ev["sampler"] == "ddim" else "") + ", clipped), the "
            "command line's default sampler. Quality is given against training steps, which do "
            "not depend on the machine; minutes follow from the default run's speed, timed "
            "alone (below). A confident share from n samples has a standard error of about "
            f"{(0.25 / ev['n']) ** 0.5:.2f}. The runs with and without flags trained for "
            "different totals, but with a constant learning rate after warm-up a run's first "
            "2,500 steps are the default run's, so the base rows show the same recipe trained "
            "twice (one and two torch threads: different rounding, different weights). Each "
            "result's machine and command:", ""]
    out += [f"- `{res['name']}`: " + machine_line(res) for res in results] + [""]
    steps = sorted({r["step"] for res in results for r in res["rows"]})
    rows = []
    for res in results:
        by_step = {r["step"]: r for r in res["rows"]}
        flags = res["recipe"].replace("python -m diffusion_tutorial train", "").strip()
        row = {"recipe": recipe_label(flags), "flags": f"`{flags}`" if flags else "",
               "seed": res["training_seed"]}
        for st in steps:
            r = by_step.get(st)
            row[str(st)] = f"{r['confident_share']:.3f} / {r['fid']:.1f}" if r else "–"
        rows.append(row)
    out += ["Confident share / classifier-FID at each training step:", "",
            table(rows, ["recipe", "flags", "seed"] + [str(st) for st in steps]), ""]
    out += recipe_verdict(results)
    cost = load("recipe_step_cost")
    if cost:
        out += ["**Cost of a training step**, relative to the first recipe, alternating between "
                f"the recipes in one process ({cost['threads']} torch "
                f"thread{'s' if cost['threads'] != 1 else ''}):", "",
                machine_line(cost), "",
                table(cost["rows"], ["recipe", "flags", "batch", "parameters", "s_per_step_median",
                                     "cost_ratio"],
                      ["recipe", "flags", "batch", "parameters", "s / step (median)",
                       "cost relative to the first"]), ""]
    return out


RECIPE_CHANGES = {"--batch-size 32": "batch 32", "--schedule cosine": "cosine noise schedule",
                  "--lr-schedule cosine": "cosine learning-rate decay",
                  "--prediction v --loss-weighting min_snr": "v-prediction, min-SNR weighting"}


def recipe_label(flags: str) -> str:
    """What a recipe changes, in words, from its training flags."""
    changes = [label for flag, label in RECIPE_CHANGES.items() if flag in flags]
    if not changes:
        return "the default" if not flags or flags.replace("--seed 0", "").split()[:1] == ["--steps"] else flags
    return ", ".join(changes)


def recipe_verdict(results: list[dict]) -> list[str]:
    """The 10-minute goal (confident share >= 0.8, FID within 2x its floor) against the
    default run, timed alone, and what the other recipes and the shipped model say bounds it."""
    default = next((r for r in results if r["recipe"].strip() == "python -m diffusion_tutorial train"), None)
    if not default or not default["rows"]:
        return []
    last = default["rows"][-1]
    minutes = default["rows"][-1].get("logged_minutes", float("nan"))
    met = last["confident_share"] >= 0.8 and last["fid"] <= 2 * last["fid_floor"]
    out = [f"**The default run against the goal.** `python -m diffusion_tutorial train` reached "
           f"step {last['step']:,} after {minutes:.1f} minutes of training: confident share "
           f"{last['confident_share']:.3f}, "
           f"class entropy {last['class_entropy']:.2f}, classifier-FID {last['fid']:.1f} against "
           f"a floor of {last['fid_floor']:.1f} ({last['fid'] / last['fid_floor']:.1f}x). The goal "
           f"of a confident share of at least 0.8 and an FID within 2x the floor in 10 minutes is "
           + ("met." if met else "not met."), ""]
    base = next((r for r in results if r["recipe"].strip().endswith("--seed 0 --steps 3000")), None)
    shipped = PRETRAINED / "mnist.json"
    if met or not base or not shipped.exists():
        return out
    share = {r["step"]: r["confident_share"] for r in base["rows"]}
    steps = sorted(share)
    rising = all(share[a] < share[b] for a, b in zip(steps, steps[1:]))
    se = (0.5 / default["evaluation"]["n"]) ** 0.5  # of a difference of two shares, at most
    better = [r["recipe"] for r in results if r is not base and r is not default and any(
        row["step"] in share and row["confident_share"] > share[row["step"]] + 2 * se
        for row in r["rows"])]
    m = json.loads(shipped.read_text())
    sm = m.get("metrics", {})
    out += [f"What bounds it is training compute. In the default recipe's snapshots (the row "
            f"with flags) the confident share rises "
            + ("at every snapshot" if rising else "with training") + f", from "
            f"{share[steps[0]]:.3f} at step {steps[0]:,} to {share[steps[-1]]:.3f} at step "
            f"{steps[-1]:,}; the same network trained for {m['training']['steps']:,} steps with a "
            f"cosine decay (the shipped model, {m['training']['train_seconds'] / 60:.0f} minutes) "
            f"scores {sm.get('confident_share', float('nan')):.3f} and FID "
            f"{sm.get('fid', float('nan')):.1f} ({sm.get('sampler')}, {sm.get('n')} samples). "
            + ("No other recipe scores above the default recipe at any common step by more than "
               "two standard errors of the difference. " if not better else
               f"Recipes above the default recipe at some step: {', '.join(better)}. ")
            + f"At the default run's {last['step'] / (minutes * 60):.1f} steps per second, "
            "10 minutes buy about "
            f"{round(last['step'] / minutes * 10, -2):,.0f} steps of the "
            f"{m['parameters'] / 1e6:.2f}M-parameter UNet.", ""]
    return out


def section_scaling() -> list[str]:
    res = load("scaling")
    out = ["## Training cost against batch size and width", ""]
    if not res:
        return out + [missing("bench_scaling.py"), ""]
    cols = ["batch", "width", "params", "step_s", "images_per_s", "peak_rss_mib"]
    heads = ["batch", "base width", "parameters", "s / step", "images / s", "peak RSS (MiB)"]
    out += [machine_line(res), "", "By batch size:", "", table(res["by_batch"], cols, heads), "",
            "By base width" + (f" (kept from the run of {res['by_width_from']}, made with "
                               "`--batches \"\"`)" if res.get("by_width_from") else "") + ":", "",
            table(res["by_width"], cols, heads), ""]
    return out


def section_time_to_quality() -> list[str]:
    out = ["## Time to quality", ""]
    results = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("time_to_quality*.json"))]
    if not results:
        return out + [missing("bench_time_to_quality.py"), ""]
    for res in results:
        r = res["first_reached"]
        reached = (f"The confident share first reached {res['target_confident_share']} at step "
                   f"{r['step']:,}, after {r['train_minutes']:.1f} minutes of training." if r else
                   f"The confident share did not reach {res['target_confident_share']} in this run.")
        if res.get("title"):
            out += [f"### {res['title']}", ""]
        out += [machine_line(res), ""]
        if res.get("training_note"):
            out += [res["training_note"], ""]
        out += [f"Snapshots of the EMA weights during the run, each measured with {res['n']} DDIM "
                f"samples of {res['ddim_steps']} steps (η = {res.get('eta', 0):g}). {reached}", "",
                table(res["rows"], [c for c in ("step", "train_minutes", "confident_share",
                                                 "confident_share_real", "class_entropy", "fid",
                                                 "fid_floor") if c in res["rows"][0]]), ""]
    return out


# ---------------------------------------------------------------------- GPU (gpucheck)
def _perf():
    """benchmarks/_perf.py: issue 10's targets, loss-log rates, FLOP counts."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import _perf
    return _perf


def thousands(v, digits: int = 0) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def judged(row: dict) -> str:
    return {True: "yes", False: "no", None: "not judged"}[row["met"]]


def cli_loop(folder: Path, spec: dict, preset: str, peak: float) -> dict:
    """Steady rate of a committed CLI run's loss log (the first record and a quarter of the
    time after it left out, as bench_train_loop.py does), and its MFU."""
    from diffusion_tutorial import get_config
    p = _perf()
    log = p.read_loss_log(folder / spec["log"])
    first = log[0]["time"]
    rate = p.steady_rate(log, first + 0.25 * (log[-1]["time"] - first))
    config = get_config(preset)
    flops = p.model_step_flops(config)
    return {"steps_per_s": rate["steps_per_s"], "images_per_s": rate["steps_per_s"] * config.batch_size,
            "batch": config.batch_size, "mfu": flops * rate["steps_per_s"] / peak, "rate": rate,
            "gflop_per_image": flops / config.batch_size / 1e9}


ONE_STEP = re.compile(r"(\w+) batch (\d+) compile=(True|False): ([\d.]+) ms/step, (\d+) img/s, "
                      r"([\d.]+) steps/s, MFU\(989\) ([\d.]+)")


def section_gpu_first_run(folder: Path) -> list[str]:
    """The first measurements on a GPU, made before scripts/gpu_check.py existed; the raw
    results are committed in ``folder`` with ``run.json`` describing them."""
    p = _perf()
    meta = json.loads((folder / "run.json").read_text())
    m = meta["machine"]
    peak, peak_label = p.peak_flops(m["gpu"])
    out = [f"### {meta['title']}, {meta['date']}, commit {meta['commit']}", "",
           f"*Measured {meta['date']} on one {m['gpu']} ({m['gpu_memory']}, driver {m['driver']}), "
           f"{m['cpu_cores']} CPU cores, Python {m['python']}, torch {m['torch']}, torchvision "
           f"{m['torchvision']}, diffusers {m['diffusers']}, with the project at commit "
           f"{meta['commit']}. {meta['note']} MFU is against {peak_label}.*", ""]
    cifar = cli_loop(folder, meta["cifar10_loop"], "cifar10", peak)
    full = cli_loop(folder, meta["full_loop"], "full", peak)
    vs = {name: json.loads((folder / f"vs_diffusers_cuda_{name}.json").read_text())
          for name in ("eager", "compiled")}
    ratio = vs["compiled"]["training"]["ratios"]["ours/diffusers (each in its faster layout)"]
    rows = [p.target_row("cifar10_cli_images_per_s", cifar["images_per_s"], True),
            p.target_row("full_cli_steps_per_s", full["steps_per_s"], True),
            p.target_row("ours_vs_diffusers_compiled", ratio, True)]
    shown = [f"{thousands(cifar['images_per_s'])} ({cifar['steps_per_s']:.1f} steps/s, "
             f"MFU {cifar['mfu']:.1%})",
             f"{full['steps_per_s']:.1f} (MFU {full['mfu']:.1%})", f"{ratio:.3f}"]
    out += ["**Issue 10's targets.** The two CLI rows are the real training loop "
            "(`python -m diffusion_tutorial train`, eager, bf16 autocast), its steady rate read from the "
            "run's loss log after the first quarter of its time; the last row is the training step "
            "alone, compiled, from the comparison with diffusers below.", "",
            table([{"target": r["target"], "goal": f"≥ {r['goal']:,g}", "measured": v, "met": judged(r)}
                   for r, v in zip(rows, shown)], ["target", "goal", "measured", "met"]), ""]
    for key, c in (("cifar10_loop", cifar), ("full_loop", full)):
        spec = meta[key]
        out += [f"- `{spec['command']}`, stopped by {spec['stopped']}: {c['rate']['total_steps']:,} steps in "
                f"{c['rate']['total_s']:.0f} s, on {spec['data']}; {c['gflop_per_image']:.1f} GFLOP per "
                "image and step (FlopCounterMode)."]
    out += [""]
    one = [dict(zip(("preset", "batch", "compiled", "ms", "img", "steps", "mfu"), g))
           for g in ONE_STEP.findall((folder / meta["one_step"]["file"]).read_text())]
    if one:
        out += [f"**One training step alone**: {meta['one_step']['what']}.", "",
                table([{"preset": o["preset"], "batch": o["batch"],
                        "step": "compiled" if o["compiled"] == "True" else "eager", "ms / step": o["ms"],
                        "images / s": thousands(float(o["img"])), "steps / s": o["steps"],
                        "MFU": f"{float(o['mfu']):.1%}"} for o in one],
                      ["preset", "batch", "step", "ms / step", "images / s", "steps / s", "MFU"]), ""]
        pairs = {(o["preset"], o["batch"], o["compiled"]): float(o["steps"]) for o in one}
        full_pair = [pairs.get(("full", "128", c)) for c in ("False", "True")]
        if all(full_pair):
            out += [f"Compiled, the full preset's step alone is {full_pair[1] / full_pair[0]:.2f}x as fast "
                    "as eager with the same arithmetic: at a few percent of the peak, the eager step is "
                    "bound by what compilation removes (many small kernel launches and the memory traffic "
                    "between them), not by arithmetic.", ""]
    rows_vs = []
    for name, res in vs.items():
        for r in res["training"]["rows"]:
            rows_vs.append({"step": name, "model": r["model"], "images / s": thousands(r["images_per_s"]),
                            "ms / step": f"{r['ms_per_step']:.1f}", "MFU": f"{r['mfu']:.1%}"})
    c = vs["eager"]["training"]
    out += [f"**Against diffusers' `UNet2DModel`** (`{vs['eager']['command']}`, and the same compiled): "
            f"the DDPM CIFAR-10 UNet, {c['params_ours']:,} parameters in both, batch {c['batch']}, "
            f"{c['precision']}, channels_last, {c['rows'][0]['gflop_per_image']:.1f} GFLOP per image.", "",
            table(rows_vs, ["step", "model", "images / s", "ms / step", "MFU"]), "",
            "ours / diffusers: " + ", ".join(
                f"{name} {res['training']['ratios']['ours/diffusers (each in its faster layout)']:.3f}"
                for name, res in vs.items()) + ".", ""]
    worst = {}
    for r in vs["eager"]["correctness"]:
        key = r["diffusers alphas_cumprod"]
        worst[key] = max(worst.get(key, 0.0), r["max_abs_diff"])
    out += ["The sampler cross-check (part (a) of the comparison, run on that machine's CPU) agrees with "
            "the CPU section: largest |ours − diffusers| over every timestep and check "
            + ", ".join(f"{v:.1e} with diffusers' ᾱ_t in {k}" for k, v in worst.items()) + ".", ""]
    ev = json.loads((folder / meta["evaluation"]["file"]).read_text())
    times = {r["step"]: r["time"] for r in p.read_loss_log(folder / meta["full_loop"]["log"])}
    rows_q = []
    labels = {"ddim50_eta1": "DDIM-50, η = 1", "ddim50_eta0": "DDIM-50, η = 0", "ddpm1000": "DDPM-1000"}
    order = list(labels)
    for r in sorted(ev, key=lambda r: (int(r["tag"].split("_")[1]), order.index(r["tag"].split("_", 2)[2]))):
        step = int(r["tag"].split("_")[1])
        label = labels[r["tag"].split("_", 2)[2]]
        rows_q.append({"step": thousands(step), "training minutes": f"{times[step] / 60:.1f}",
                       "sampler": label,
                       "sampling s": f"{r['sample_s']:.1f}", "confident share": f"{r['confident_share']:.3f}",
                       "FID": f"{r['fid']:.1f}", "FID floor": f"{r['fid_floor']:.1f}"})
    out += [f"**Sample quality of the full-preset run above**: {meta['evaluation']['what']} (real digits' "
            f"confident share {ev[0]['confident_share_real']:.3f}).", "",
            table(rows_q, ["step", "training minutes", "sampler", "sampling s", "confident share", "FID",
                           "FID floor"]), ""]
    return out


def section_gpu_check(folder: Path) -> list[str]:
    """A report folder written by scripts/gpu_check.py: its Markdown, headings moved two
    levels down (dry runs are not shown)."""
    report = json.loads((folder / "report.json").read_text())
    if report.get("dry_run"):
        return []
    lines = []
    for line in (folder / "report.md").read_text().splitlines():
        lines.append("##" + line if line.startswith("#") else line)
    return lines + ["", f"*Files: `benchmarks/results/gpu/{folder.name}/`.*", ""]


def section_gpu() -> list[str]:
    out = ["## On a GPU", "",
           "`python scripts/gpu_check.py` checks the GPU path in one command of about nine minutes on one "
           "H100-class GPU: it trains the `full` preset for `--train-minutes` (1.25) and scores its EMA "
           "snapshots with the classifier, times the `cifar10` preset's CLI loop, compares the training step "
           "with diffusers', and runs the chapters at full size in the time left, each part within a share "
           "of one budget (`--budget-minutes`, default 9; `--parts chapters` runs all chapters alone). It "
           "needs no network: place MNIST's IDX files and the CIFAR-10 python batches under `--data-dir` "
           "first (without them it trains on `mnist-sample` and times the loop on random data in CIFAR-10's "
           "format, and says so). It writes one folder (`--out`, default "
           "`benchmarks/results/gpu/<date>-<gpu>`) with `report.md`, `report.json`, `log.txt`, the "
           "benchmarks' JSON and a grid of samples. Commit that folder and rerun `python "
           "benchmarks/make_benchmarks_page.py`: every report folder appears below, newest first. "
           "`--dry-run` does the same at tiny sizes on a CPU (CI runs it); its figures are not GPU figures.",
           ""]
    found = []
    for folder in sorted(GPU_RESULTS.iterdir()) if GPU_RESULTS.is_dir() else []:
        if (folder / "report.json").exists():
            date = json.loads((folder / "report.json").read_text())["date"]
            found.append((date, section_gpu_check(folder)))
        elif (folder / "run.json").exists():
            date = json.loads((folder / "run.json").read_text())["date"]
            found.append((date, section_gpu_first_run(folder)))
    for _, lines in sorted(found, key=lambda item: item[0], reverse=True):
        out += lines
    return out


def render() -> str:
    """The page's Markdown, from the result files and the shipped models' JSON."""
    lines = ["# Benchmarks", "",
             "```{note}",
             "This page is generated by `python benchmarks/make_benchmarks_page.py` from the JSON "
             "files that the scripts in `benchmarks/` write. Timings on a shared, busy CPU are "
             "inflated and vary from run to run; ratios measured in one process (alternating the "
             "two sides) are more trustworthy than absolute numbers.",
             "```", "",
             "Sample quality is measured offline with a small MNIST classifier shipped with the "
             "package (`diffusion_tutorial.metrics`): the classifier-FID, the Fréchet distance "
             "{cite}`heusel2017gans` between Gaussian fits of its penultimate features of "
             "generated and real digits; the confident share, the fraction of samples the "
             "classifier calls with probability at least 0.9; and the class entropy, the entropy "
             "of the predicted-digit histogram (log 10 ≈ 2.303 when all ten digits appear equally "
             "often). The classifier-FID is not comparable with the Inception FID of papers. For "
             "a CIFAR-10 run, `python benchmarks/bench_fid_cifar10.py RUN_DIR` computes the standard "
             "Inception FID against the 50,000 training images with the optional package "
             "`torch-fidelity` or `clean-fid`, where one is installed and can download its Inception "
             "weights once; nothing else in the project needs them.", ""]
    for section in (section_pretrained, section_classifier, section_vs_diffusers, section_gpu,
                    section_quality, section_eta, section_recipes, section_time_to_quality,
                    section_scaling):
        lines += section()
    return "\n".join(lines).rstrip() + "\n"


def main() -> None:
    PAGE.write_text(render())
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
