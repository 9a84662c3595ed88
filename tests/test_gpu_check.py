"""scripts/gpu_check.py: its pieces (the time budget, the report, the result folder's
limits), and the whole check in its --dry-run on the CPU, so that the script CI never runs
on a GPU cannot rot."""
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_budget_passes_unused_time_forward(gc):
    clock = FakeClock()
    budget = gc.Budget(100.0, {"a": 1.0, "b": 1.0, "c": 2.0}, clock=clock)
    assert budget.allot("a") == pytest.approx(25.0)       # 100 * 1/4
    clock.now += 10.0                                       # a used 10 of its 25 s
    assert budget.allot("b") == pytest.approx(30.0)        # 90 * 1/3: a's 15 s spread over b and c
    clock.now += 30.0
    assert budget.allot("c") == pytest.approx(60.0)        # the last part gets all that is left
    assert budget.pending == []


def test_budget_never_hands_out_time_past_the_deadline(gc):
    clock = FakeClock()
    budget = gc.Budget(60.0, {"a": 1.0, "b": 1.0}, clock=clock)
    budget.allot("a")
    clock.now += 500.0                                      # a overran the whole budget
    assert budget.left() == 0.0 and budget.allot("b") == 0.0


def test_slug_gives_safe_names(gc):
    assert gc.slug("NVIDIA H200") == "nvidia-h200"
    assert gc.slug("Tesla T4 (PCIe) / 16 GB") == "tesla-t4-pcie-16-gb"
    assert gc.SAFE_NAME.match(gc.slug("ÄÖ weird  name!")) and gc.slug("!!") == "unknown"


def fake_report(dry_run=False):
    return {"kind": "gpu_check", "format": 1, "dry_run": dry_run, "command": "python scripts/gpu_check.py",
            "date": "2026-12-04 12:00 UTC", "budget_s": 540.0, "wall_s": 500.0, "status": "failed",
            "machine": {"gpu": "NVIDIA H200", "gpu_memory_gib": 139.8, "driver": "580.1", "torch": "2.11.0",
                        "cuda": "13.0", "python": "3.12.3", "cpu_cores": 16, "commit": "abc1234",
                        "packages": {"diffusers": "0.42.1", "nbval": None}},
            "parts": {
                "full_training": {"status": "passed", "wall_s": 150.0, "budget_s": 167.0,
                                  "data": "mnist-sample",
                                  "train_command": "python -m diffusion_tutorial train --preset full",
                                  "train_limit_s": 90.0, "steps": 2300, "final_loss": 0.021,
                                  "steady": {"steps_per_s": 25.7},
                                  "evaluation": [{"step": 2300, "train_s": 90.1, "sampler": "ddim",
                                                  "steps": 50, "eta": 1.0, "n": 1000, "sample_s": 2.1,
                                                  "confident_share": 0.8, "fid": 14.0, "fid_floor": 6.0,
                                                  "class_entropy": 2.29},
                                                 {"snapshot": "step_000500", "sampler": "ddim", "steps": 50,
                                                  "skipped": "time budget"}],
                                  "targets": [{"key": "full_cli_steps_per_s", "target": "full loop (steps/s)",
                                               "goal": 80.0, "measured": 25.7, "met": False}]},
                "chapters": {"status": "failed", "wall_s": 100.0, "budget_s": 120.0, "quick_mode": False,
                             "jobs": 4, "error": "chapter 13 failed",
                             "chapters": [{"chapter": "00_introduction", "status": "passed", "wall_s": 30.0},
                                          {"chapter": "13_cifar10_full_size", "status": "failed",
                                           "wall_s": 70.0},
                                          {"chapter": "12_guidance", "status": "not run (time budget)"}]}}}


def test_report_writer(gc, tmp_path):
    report = fake_report()
    gc.write_report(report, tmp_path)
    back = json.loads((tmp_path / "report.json").read_text())
    assert back["parts"] == report["parts"] and back["machine"]["gpu"] == "NVIDIA H200"
    assert back["targets"] == report["parts"]["full_training"]["targets"]   # gathered from the parts
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# GPU check: NVIDIA H200, 2026-12-04\n")
    assert "NVIDIA H200; 2026-12-04 12:00 UTC; commit abc1234" in md
    assert "Overall: **failed**" in md and "| full_training | passed | 150 | 167 |" in md
    assert "| full loop (steps/s) | 80 | 25.7 | no |" in md
    assert "| 13_cifar10_full_size | failed | 70 |" in md
    assert "| 12_guidance | not run (time budget) | – |" in md
    assert "Not scored for lack of time: step_000500 ddim-50." in md
    assert "## Errors" in md and "chapter 13 failed" in md
    assert "nbval not installed" in md and "time budget" in md
    assert "dry run" not in md
    gc.write_report(fake_report(dry_run=True), tmp_path)
    assert "(dry run on a CPU: tiny sizes, not GPU figures)" in (tmp_path / "report.md").read_text()


def test_result_folder_limits(gc, tmp_path):
    for i in range(gc.MAX_FILES):
        (tmp_path / f"file_{i}.json").write_text("{}")
    assert gc.check_out_folder(tmp_path) == []
    (tmp_path / "one more.json").write_text("{}")
    problems = gc.check_out_folder(tmp_path)
    assert any("at most 8" in p for p in problems) and any("one more.json" in p for p in problems)


def test_dry_run_options_are_small(gc):
    args = gc.parse_args(["--dry-run"])
    assert args.n == 32 and args.train_minutes <= 0.5 and args.chapters == "00_introduction"
    full = gc.parse_args([])
    assert (full.n, full.ddim_steps, full.budget_minutes) == (1000, 50, 9.0) and full.chapters is None
    with pytest.raises(SystemExit):
        gc.parse_args(["--parts", "chapters,nonsense"])


@pytest.mark.slow
def test_dry_run_writes_a_complete_report(tmp_path):
    """The whole check on a CPU at tiny sizes (about 3 minutes on an idle 2-core CPU)."""
    out = tmp_path / "report"
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg", DIFFUSION_TUTORIAL_QUICK="1",
               http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out),
                           "--data-dir", str(tmp_path / "no-data")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "gpu_check" and report["dry_run"] and report["status"] == "passed"
    assert report["wall_s"] <= report["budget_s"] and wall < 900
    assert set(report["parts"]) == {"full_training", "cifar10_loop", "vs_diffusers", "chapters"}
    for name, part in report["parts"].items():
        assert part["status"] == "passed", (name, part.get("error"))
        assert part["wall_s"] <= part["budget_s"] + 60, name
    for key in ("torch", "python", "commit", "packages", "cpu_cores"):
        assert key in report["machine"]
    full = report["parts"]["full_training"]
    scored = [r for r in full["evaluation"] if "fid" in r]
    assert {(r["sampler"], r["eta"]) for r in scored} >= {("ddim", 1.0), ("ddpm", 1.0), ("ddim", 0.0)}
    assert all(r["n"] == 32 and 0 <= r["confident_share"] <= 1 for r in scored)
    assert "mnist-sample" in full["data"]
    assert "--no-compile --mixed-precision auto --no-channels-last" in full["train_command"]
    cifar = report["parts"]["cifar10_loop"]
    assert "random uint8 data in the CIFAR-10 python format" in cifar["data"] and cifar["images_per_s"] > 0
    assert "convolution" in cifar["bound"]
    variants = report["parts"]["vs_diffusers"]["variants"]
    assert set(variants) == {"eager", "compiled"} and all(v["rows"] for v in variants.values())
    chapters = report["parts"]["chapters"]["chapters"]
    assert [(c["chapter"], c["status"]) for c in chapters] == [("00_introduction", "passed")]
    keys = {t["key"] for t in report["targets"]}
    assert keys == {"full_cli_steps_per_s", "cifar10_cli_images_per_s", "ours_vs_diffusers_compiled"}
    assert all(t["met"] is None for t in report["targets"])        # CPU figures are never judged
    files = sorted(p.name for p in out.iterdir())
    assert {"report.md", "report.json", "log.txt", "train_loop_cifar10.json", "vs_diffusers_eager.json",
            "vs_diffusers_compiled.json", "samples_full.png"} == set(files)
    assert len(files) <= 8 and all(p.is_file() for p in out.iterdir())
    md = (out / "report.md").read_text()
    for heading in ("## Issue 10's targets", "## Training the full preset", "## The chapters",
                    "## The cifar10 preset's CLI loop", "## Against diffusers' UNet2DModel"):
        assert heading in md
    assert str(tmp_path) not in md              # no local paths in what gets committed


def test_benchmarks_page_shows_committed_report_folders(gc, tmp_path, monkeypatch):
    """make_benchmarks_page renders every gpu_check folder under benchmarks/results/gpu/ (a
    dry run's excepted), newest first, after the committed first H200 measurements' section."""
    spec = importlib.util.spec_from_file_location("make_benchmarks_page",
                                                  ROOT / "benchmarks" / "make_benchmarks_page.py")
    page = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(page)
    gpu = tmp_path / "gpu"
    for name, date, dry in (("2027-01-05-nvidia-h100", "2027-01-05 10:00 UTC", False),
                            ("2027-02-01-nvidia-h200", "2027-02-01 10:00 UTC", False),
                            ("dry", "2027-03-01 10:00 UTC", True)):
        report = fake_report(dry_run=dry)
        report["date"] = date
        (gpu / name).mkdir(parents=True)
        gc.write_report(report, gpu / name)
    first_run = ROOT / "benchmarks" / "results" / "gpu" / "h200-2026-12-04"
    (gpu / first_run.name).symlink_to(first_run)
    monkeypatch.setattr(page, "GPU_RESULTS", gpu)
    text = "\n".join(page.section_gpu())
    feb, jan = text.index("### GPU check: NVIDIA H200, 2027-02-01"), text.index("2027-01-05 10:00 UTC")
    first = text.index("### One NVIDIA H200, 2026-12-04, commit 0a4cf51")
    assert feb < jan < first                              # newest first
    assert "dry run" not in text and "2027-03-01" not in text
    assert "#### Issue 10's targets" in text and "\n## " not in text.split("## On a GPU", 1)[1]
    assert "benchmarks/results/gpu/2027-02-01-nvidia-h200/" in text
