"""The checks accept the reference answers and name the mistake in wrong answers.

Every wrong implementation below is written the way a student might write it; each test
asserts both that the check fails and that its message names the actual mistake.
"""
import math

import pytest
import torch

from diffusion_tutorial import checks as C


def per_example(values, t, x):
    """values[t] shaped (B, 1, ..., 1) like a student's view(-1, ...) reshape."""
    return values[t].view(-1, *[1] * (x.ndim - 1))


def prev(alphas_cumprod):
    return torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])


# ---------------------------------------------------------------- correct student code
def q_sample(x0, t, noise, alphas_cumprod):
    a = per_example(alphas_cumprod, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def cosine_schedule(T, s=0.008):
    steps = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)


def posterior(x0, x_t, t, betas):
    abar = torch.cumprod(1 - betas, 0)
    b, ab, abp = (per_example(v, t, x_t) for v in (betas, abar, prev(abar)))
    mean = abp.sqrt() * b / (1 - ab) * x0 + (1 - b).sqrt() * (1 - abp) / (1 - ab) * x_t
    return mean, b * (1 - abp) / (1 - ab)


def mean_from_eps(x_t, t, eps, betas):
    abar = torch.cumprod(1 - betas, 0)
    b, ab = per_example(betas, t, x_t), per_example(abar, t, x_t)
    return (x_t - b / (1 - ab).sqrt() * eps) / (1 - b).sqrt()


def ddpm_step(x_t, t, eps, betas, z):
    b = per_example(betas, t, x_t)
    nonzero = per_example((t > 0).to(x_t.dtype), torch.arange(len(t), device=t.device), x_t)
    return mean_from_eps(x_t, t, eps, betas) + nonzero * b.sqrt() * z


def ddim_step(x_t, t, t_prev, eps, alphas_cumprod, eta, z):
    ab = per_example(alphas_cumprod, t, x_t)
    abp = torch.where(t_prev >= 0, alphas_cumprod[t_prev.clamp(min=0)], 1.0).view_as(ab)
    x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    sigma = eta * ((1 - abp) / (1 - ab) * (1 - ab / abp)).sqrt()
    return abp.sqrt() * x0 + (1 - abp - sigma ** 2).sqrt() * eps + sigma * z


def score_from_eps(eps, t, alphas_cumprod):
    return -eps / (1 - per_example(alphas_cumprod, t, eps)).sqrt()


def loss(eps_pred, eps):
    return ((eps_pred - eps) ** 2).mean()


def p_losses(model, x0, t, noise, alphas_cumprod):
    return loss(model(q_sample(x0, t, noise, alphas_cumprod), t), noise)


def scale(x):
    return x * 2 - 1


CORRECT = {"q_sample": q_sample, "cosine_schedule": cosine_schedule, "posterior": posterior,
           "mean_from_eps": mean_from_eps, "ddpm_step": ddpm_step, "ddim_step": ddim_step,
           "score_from_eps": score_from_eps, "loss": loss, "p_losses": p_losses,
           "scale_to_model_range": scale}


def run(name, fn, **kw):
    return getattr(C, f"check_{name}")(fn, verbose=False, **kw)


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_reference_passes(name):
    result = run(name, getattr(C, f"_reference_{name}"))
    assert result, result.report()
    assert all(p.passed for p in result.parts) and len(result.parts) >= 3


@pytest.mark.parametrize("name", sorted(CORRECT))
def test_independent_student_solution_passes(name):
    result = run(name, CORRECT[name])
    assert result, result.report()


def failure_text(result):
    assert not result, "the check should have failed:\n" + result.report()
    return " ".join(result.messages)


# ---------------------------------------------------------------- the mistakes to name
def test_missing_sqrt_on_alphas_cumprod():
    def wrong(x0, t, noise, abar):
        a = per_example(abar, t, x0)
        return a * x0 + (1 - a).sqrt() * noise
    assert "missing square root on ᾱ_t" in failure_text(run("q_sample", wrong))


def test_q_sample_t_off_by_one_both_ways():
    def minus(x0, t, noise, abar):  # "t is 1-based, so subtract 1"
        return q_sample(x0, t - 1, noise, abar)

    def plus(x0, t, noise, abar):
        return q_sample(x0, t + 1, noise, abar)
    text = failure_text(run("q_sample", minus))
    assert "off by one in t" in text and "t − 1" in text and "don't subtract 1" in text
    res = run("q_sample", plus)
    text = failure_text(res)
    assert "off by one in t" in text and "don't add 1" in text
    last = [p for p in res.parts if p.name.startswith("last step")][0]
    assert last.passed is False and "index out of range" in last.message


def test_wrong_shape_without_broadcasting():
    def wrong(x0, t, noise, abar):
        return abar[t].sqrt() * x0 + (1 - abar[t]).sqrt() * noise  # (B,) against (B, C, H, W)
    res = run("q_sample", wrong)
    text = failure_text(res)
    assert "shape error" in text and "(B, 1, ..., 1)" in text
    assert [p.passed for p in res.parts if p.name == "batch of 1"] == [True]


def test_hard_coded_four_dims_fails_only_on_points():
    def wrong(x0, t, noise, abar):
        a = abar[t].view(-1, 1, 1, 1)
        return a.sqrt() * x0 + (1 - a).sqrt() * noise
    res = run("q_sample", wrong)
    failed = [p.name for p in res.parts if not p.passed]
    assert failed == ["2-D points (5, 2)"]
    assert "wrong shape" in res.messages[0]


def test_data_in_zero_one_instead_of_minus_one_one():
    res = run("scale_to_model_range", lambda x: x.clone())
    assert "still in [0, 1]" in failure_text(res)
    res = run("scale_to_model_range", lambda x: x - 0.5)
    assert "[−0.5, 0.5]" in failure_text(res)


def test_beta_instead_of_beta_tilde_in_posterior():
    def wrong(x0, x_t, t, betas):
        mean, _ = posterior(x0, x_t, t, betas)
        return mean, per_example(betas, t, x_t)
    text = failure_text(run("posterior", wrong))
    assert "the variance is β_t" in text and "β̃_t" in text


def test_posterior_wraps_at_first_step():
    def wrong(x0, x_t, t, betas):
        abar = torch.cumprod(1 - betas, 0)
        b, ab, abp = (per_example(v, t, x_t) for v in (betas, abar, abar))
        abp = per_example(abar, t - 1, x_t)  # alphas_cumprod[t - 1]: wraps at t = 0
        mean = abp.sqrt() * b / (1 - ab) * x0 + (1 - b).sqrt() * (1 - abp) / (1 - ab) * x_t
        return mean, b * (1 - abp) / (1 - ab)
    res = run("posterior", wrong)
    assert [p.name for p in res.parts if not p.passed] == ["first step (t = 0)"]
    assert "wraps around" in res.messages[0]


def test_noise_added_at_first_step():
    def wrong(x_t, t, eps, betas, z):
        return mean_from_eps(x_t, t, eps, betas) + per_example(betas, t, x_t).sqrt() * z
    res = run("ddpm_step", wrong)
    assert "noise added at the first step" in failure_text(res)
    assert {p.name for p in res.parts if not p.passed} == {
        "first step (t = 0)", "per-example t (t = 0 for some)"}


def test_ddpm_step_branching_on_t_is_explained():
    def wrong(x_t, t, eps, betas, z):
        mean = mean_from_eps(x_t, t, eps, betas)
        if t == 0:
            return mean
        return mean + per_example(betas, t, x_t).sqrt() * z
    assert "use a mask" in failure_text(run("ddpm_step", wrong)).lower()


def test_ddpm_step_other_variance_is_named():
    def tilde(x_t, t, eps, betas, z):
        _, var = posterior(x_t, x_t, t, betas)
        return mean_from_eps(x_t, t, eps, betas) + var.sqrt() * z
    assert "variance='beta_tilde'" in failure_text(run("ddpm_step", tilde))
    assert run("ddpm_step", tilde, variance="beta_tilde")


def test_ddim_eta_ignored():
    def wrong(x_t, t, t_prev, eps, abar, eta, z):
        return ddim_step(x_t, t, t_prev, eps, abar, 0.0, z)
    res = run("ddim_step", wrong)
    assert "η is ignored" in failure_text(res)
    assert [p.passed for p in res.parts if p.name.startswith("η = 0,")] == [True]


def test_ddim_uses_t_minus_one_instead_of_t_prev():
    def wrong(x_t, t, t_prev, eps, abar, eta, z):
        return ddim_step(x_t, t, t - 1, eps, abar, eta, z)
    assert "instead of t_prev" in failure_text(run("ddim_step", wrong))


def test_wrong_sign_and_missing_sqrt_in_score():
    assert "wrong sign" in failure_text(run("score_from_eps", lambda e, t, a: -score_from_eps(e, t, a)))
    text = failure_text(run("score_from_eps", lambda e, t, a: -e / (1 - per_example(a, t, e))))
    assert "missing square root" in text


def test_mean_from_eps_returning_x0_hat():
    def wrong(x_t, t, eps, betas):
        ab = per_example(torch.cumprod(1 - betas, 0), t, x_t)
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    assert "predicted clean image" in failure_text(run("mean_from_eps", wrong))


def test_loss_mistakes():
    assert "summed" in failure_text(run("loss", lambda p, e: ((p - e) ** 2).sum()))
    assert "absolute" in failure_text(run("loss", lambda p, e: (p - e).abs().mean()))
    assert "reduce it to one number" in failure_text(run("loss", lambda p, e: (p - e) ** 2))
    assert "Python number" in failure_text(run("loss", lambda p, e: float(((p - e) ** 2).mean())))
    assert "no gradient" in failure_text(run("loss", lambda p, e: ((p.detach() - e) ** 2).mean()))


def test_p_losses_target_x0():
    def wrong(model, x0, t, noise, abar):
        return loss(model(q_sample(x0, t, noise, abar), t), x0)
    assert "target is the noise" in failure_text(run("p_losses", wrong))


def test_cosine_schedule_mistakes():
    def unclipped(T, s=0.008):
        steps = torch.arange(T + 1, dtype=torch.float64) / T
        f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return 1 - f[1:] / f[:-1]

    def one_too_many(T, s=0.008):
        return torch.cat([cosine_schedule(T, s), torch.full((1,), 0.5, dtype=torch.float64)])

    def returns_alphas_cumprod(T, s=0.008):
        return torch.cumprod(1 - cosine_schedule(T, s), 0)

    assert "not clipped" in failure_text(run("cosine_schedule", unclipped))
    assert "s is ignored" in failure_text(run("cosine_schedule", lambda T, s=0.008: cosine_schedule(T)))
    assert "T + 1" in failure_text(run("cosine_schedule", one_too_many))
    assert "you returned ᾱ_t" in failure_text(run("cosine_schedule", returns_alphas_cumprod))


# ---------------------------------------------------------------- the result object
def test_stub_reports_not_implemented_and_skips_the_rest():
    def stub(x0, t, noise, abar):
        raise NotImplementedError
    res = run("q_sample", stub)
    assert not res and "not implemented yet" in res.parts[0].message
    assert all(p.passed is None for p in res.parts[1:])
    assert "returned ..." in failure_text(run("q_sample", lambda *a: ...))
    assert "returned None" in failure_text(run("q_sample", lambda *a: None))
    assert "could not call it" in failure_text(run("q_sample", lambda x0, t: x0))


def test_strict_raises_with_the_message_and_report_marks(capsys):
    def wrong(x0, t, noise, abar):
        return q_sample(x0, t, -noise, abar)
    with pytest.raises(AssertionError, match="wrong sign on the noise term"):
        C.check_q_sample(wrong, strict=True, verbose=False)
    C.check_q_sample(q_sample)
    printed = capsys.readouterr().out
    assert "check_q_sample: all parts passed" in printed and printed.count("✓") == 7
    C.check_q_sample(wrong)
    assert "✗" in capsys.readouterr().out


def test_in_place_modification_is_reported():
    def wrong(x0, t, noise, abar):
        out = q_sample(x0, t, noise, abar)
        x0.zero_()
        return out
    assert "in place" in failure_text(run("q_sample", wrong))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", sorted(CORRECT))
def test_checks_cover_the_gpu_when_there_is_one(name):
    result = run(name, CORRECT[name])
    assert result, result.report()
    if name != "cosine_schedule":  # the schedule takes no tensors
        assert any(p.name.startswith("on cuda") for p in result.parts)


def test_a_gpu_only_mistake_is_explained():
    """Tensors created on the CPU inside the function fail on other devices; the message
    for that error (simulated here) tells the student what to do."""
    message = C._explain(RuntimeError("Expected all tensors to be on the same device, but "
                                      "found at least two devices, cuda:0 and cpu!"), "fn(x)")
    assert "device=x.device" in message


# ---------------------------------------------------------------- feedback that names the equation
def test_ddim_wrap_at_the_last_step_is_named_although_it_gives_nan():
    """The known mistake is tried before the NaN check: alphas_cumprod[-1] at t_prev = −1
    makes x_prev NaN, and the message says why."""
    def wrapping(x_t, t, t_prev, eps, abar, eta, z):
        ab, abp = per_example(abar, t, x_t), per_example(abar, t_prev, x_t)  # abar[-1] wraps
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        sigma = eta * ((1 - abp) / (1 - ab) * (1 - ab / abp)).sqrt()
        return abp.sqrt() * x0 + (1 - abp - sigma ** 2).sqrt() * eps + sigma * z
    res = run("ddim_step", wrapping)
    assert [p.name for p in res.parts if not p.passed] == ["last step to x_0 (t_prev = −1), η = 0.5"]
    assert "wraps around" in res.messages[0] and "NaN or inf" not in res.messages[0]


def test_beta_used_for_one_minus_alphas_cumprod_is_named_in_every_failing_part():
    def sqrt_beta(x_t, t, eps, betas):  # coefficient √β_t = β_t/√β_t instead of β_t/√(1 − ᾱ_t)
        b = per_example(betas, t, x_t)
        return (x_t - b.sqrt() * eps) / (1 - b).sqrt()

    def beta_over_beta(x_t, t, eps, betas):  # β_t/(1 − ᾱ_t) with β_t for 1 − ᾱ_t, and no root
        b = per_example(betas, t, x_t)
        return (x_t - b / b * eps) / (1 - b).sqrt()
    for wrong in (sqrt_beta, beta_over_beta):
        res = run("mean_from_eps", wrong)
        failed = [p for p in res.parts if p.passed is False]
        assert failed and "β_t is used where the equation has 1 − ᾱ_t" in failed[0].message
        assert all("β_t is used" in p.message or p.message.startswith("same problem as")
                   for p in failed), res.report()
        assert "missing square root" not in res.report()
    res = run("q_sample", lambda x0, t, n, a: per_example(a, t, x0).sqrt() * x0
              + (1 - per_example(a, t, x0) / per_example(prev(a), t, x0)).sqrt() * n)
    assert "β_t is used where the equation has 1 − ᾱ_t" in failure_text(res)


def test_huber_loss_is_named_as_such():
    text = failure_text(run("loss", lambda p, e: torch.nn.functional.huber_loss(p, e)))
    assert "Huber" in text and "mean((ε − ε_θ)²)" in text and "times" not in text


def test_an_unnamed_mistake_quotes_the_equation_to_use():
    def half_noise(x0, t, noise, abar):
        return per_example(abar, t, x0).sqrt() * x0 + 0.5 * noise
    text = failure_text(run("q_sample", half_noise))
    assert "x_t = √ᾱ_t · x0 + √(1 − ᾱ_t) · ε" in text and "docstring" not in text


def test_same_problem_points_to_the_part_that_had_it():
    def wrong(x0, t, noise, abar):
        if x0.shape[0] == 3:  # the first- and last-step cases: a different mistake
            return T_plus_one_noise(x0, t, noise, abar)
        return q_sample(x0, t, -noise, abar)

    def T_plus_one_noise(x0, t, noise, abar):
        a = per_example(abar, t, x0)
        return a.sqrt() * x0 + (1 - a) * noise
    res = run("q_sample", wrong)
    by_name = {p.name: p.message for p in res.parts}
    assert "wrong sign" in by_name["random t, float32, (4, 1, 5, 6) images"]
    assert by_name["last step (t = T − 1)"] == "same problem as above."
    assert by_name["batch of 1"] == "same problem as in “random t, float32, (4, 1, 5, 6) images”."


# ---------------------------------------------------------------- the classroom: graded out of process
from diffusion_tutorial.checks import classroom, verify  # noqa: E402

SETUP = """import math
import numpy as np
import torch
import diffusion_tutorial as dt
from diffusion_tutorial import checks
STUDENT_ID = "s1"
"""
HONEST = {
    "scale_to_model_range": "def scale_to_model_range(x):\n    return 2 * x - 1\n",
    "q_sample": ("def q_sample(x0, t, noise, alphas_cumprod):\n"
                 "    a = alphas_cumprod[t].view(-1, *[1] * (x0.ndim - 1))\n"
                 "    return a.sqrt() * x0 + (1 - a).sqrt() * noise\n"),
    "cosine_schedule": ("def cosine_schedule(T, s=0.008):\n"
                        "    steps = torch.arange(T + 1, dtype=torch.float64)\n"
                        "    f = torch.cos((steps / T + s) / (1 + s) * math.pi / 2) ** 2\n"
                        "    abar = f / f[0]\n"
                        "    return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)\n")}


def forward_notebook(**answers):
    cells = [SETUP] + [answers.get(q, code) for q, code in HONEST.items()]
    return {"cells": [{"cell_type": "code", "metadata": {}, "outputs": [], "source": c} for c in cells],
            "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def test_student_seed_is_fixed_per_student_and_differs_between_students():
    assert classroom.student_seed("s1", "q") == classroom.student_seed("s1", "q") < 2 ** 32
    assert len({classroom.student_seed(s, "q") for s in ("s1", "s2", "s3")}) == 3
    assert classroom.student_seed("s1", "q") != classroom.student_seed("s1", "p")


def test_the_audit_flags_rebinding_reference_imports_delegation_and_hard_coded_numbers():
    nb = forward_notebook(
        scale_to_model_range="torch.allclose = lambda *a, **k: True\nimport builtins\nbuiltins.abs = abs\n"
                             "np.testing.assert_allclose = None\nsetattr(checks, 'check_q_sample', print)\n"
                             "def scale_to_model_range(x):\n    return 2 * x - 1\n",
        q_sample="from diffusion_tutorial.checks import _reference_q_sample as q_sample\n",
        cosine_schedule="def cosine_schedule(T, s=0.008):\n    return dt.cosine_beta_schedule(T, s)\n"
                        "sample_std = {5: 0.31622776601683794, 10: 0.4, 50: 0.48}\n")
    flags = " | ".join(classroom.audit_notebook(nb, ["q_sample", "cosine_schedule"]))
    for expected in ["rebinds torch.allclose", "rebinds builtins.abs",
                     "rebinds numpy.testing.assert_allclose",
                     "rebinds an attribute of diffusion_tutorial.checks with setattr()",
                     "private diffusion_tutorial.checks._reference_q_sample (a reference solution)",
                     "cosine_schedule calls the package's cosine_beta_schedule",
                     "hard-coded numbers in cell 3: {5: 0.31622776601683794, 10: 0.4, 50: 0.48}"]:
        assert expected in flags, (expected, flags)
    assert classroom.audit_notebook(forward_notebook(), list(HONEST)) == []


def test_student_id_comes_from_the_cell_then_the_metadata_then_the_fallback():
    nb = forward_notebook()
    assert classroom.student_id(nb, "file") == ("s1", "STUDENT_ID cell")
    nb["cells"][0]["source"] = SETUP.replace('"s1"', '""')
    assert classroom.student_id(nb, "file") == ("file", "file name")
    nb["metadata"] = {"diffusion_tutorial": {"student_id": "s9"}}
    assert classroom.student_id(nb, "file") == ("s9", "notebook metadata")


@pytest.mark.slow
def test_answers_are_graded_again_out_of_process_where_patches_and_delegation_fail(tmp_path):
    honest = verify.verify_notebook(forward_notebook(), "forward_process", "s1", notebook_dir=str(tmp_path))
    assert all(v.passed for v in honest.questions.values()), honest.report()
    assert honest.flags == []

    wrong_q_sample = HONEST["q_sample"].replace("a.sqrt() * x0", "a * x0")
    patched = verify.verify_notebook(forward_notebook(
        scale_to_model_range="torch.allclose = lambda *a, **k: True\n"
                             "torch.testing.assert_close = lambda *a, **k: None\n"
                             "np.allclose = lambda *a, **k: True\nimport builtins\nbuiltins.max = min\n"
                             "checks.check_q_sample = lambda *a, **k: None\n"
                             + HONEST["scale_to_model_range"],
        q_sample=wrong_q_sample,
        cosine_schedule="def cosine_schedule(T, s=0.008):\n    return dt.cosine_beta_schedule(T, s)\n"),
        "forward_process", "s1", notebook_dir=str(tmp_path))
    verdicts = patched.questions
    assert verdicts["scale_to_model_range"].passed
    assert not verdicts["q_sample"].passed and "differs from the reference" in verdicts["q_sample"].message
    assert not verdicts["cosine_schedule"].passed
    assert "calls the package's schedules.cosine_beta_schedule" in verdicts["cosine_schedule"].message
    flags = " | ".join(patched.flags)
    for name in ["torch.allclose", "torch.testing.assert_close", "numpy.allclose", "builtins.max",
                 "diffusion_tutorial.checks.check_q_sample"]:
        assert f"rebinds {name} (seen when the notebook ran)" in flags, (name, flags)
    assert "(delegation)" in flags

    imported = verify.verify_notebook(forward_notebook(
        q_sample="from diffusion_tutorial.checks import _reference_q_sample as q_sample\n",
        scale_to_model_range="scale_to_model_range = dt.to_model_range\n"), "forward_process", "s1",
        notebook_dir=str(tmp_path))
    assert imported.questions["cosine_schedule"].passed
    message = imported.questions["q_sample"].message
    assert "is diffusion_tutorial.checks.harness._reference_q_sample" in message
    assert "is diffusion_tutorial.data.to_model_range" in imported.questions["scale_to_model_range"].message
