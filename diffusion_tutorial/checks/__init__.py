"""Check a student's implementation against the package and say, in plain words, what is wrong.

Each ``check_*`` function calls the student's function on random inputs (float32 and
float64, a batch of 1, 2-D points, the first and the last timestep, every available
device), compares it with the package's reference and, when the numbers differ, compares
them with a list of known mistakes (a missing square root, t off by one, β instead of β̃,
a wrong sign, ...) to name the mistake. It prints a short report, one ✓/✗ line per part,
and returns a :class:`CheckResult` that is true when every part passed. With
``strict=True`` a failing check raises ``AssertionError`` with the report, which is what
autograder and pytest tests want::

    from diffusion_tutorial.checks import check_q_sample
    check_q_sample(my_q_sample)               # prints the report
    check_q_sample(my_q_sample, strict=True)  # raises AssertionError if anything is wrong

The modules: :mod:`.harness` (results, reference answers, comparison; its docstring says
how to add a check), :mod:`.cases` (the inputs a check tries), and the checks by chapter,
:mod:`.forward`, :mod:`.reverse`, :mod:`.loss`, :mod:`.network`, :mod:`.training`,
:mod:`.sampling`, :mod:`.faster`, :mod:`.gans` and :mod:`.guidance`. For grading a class: :mod:`.classroom`
(student identifiers and seeds, a static audit of a notebook), :mod:`.questions`, :mod:`.verify`
and :mod:`.sandbox` (the answers run again in a fresh process) and :mod:`.otter_plugin` (which
makes Otter use that verdict).
"""
from .cases import Case, T_CHECK
from .harness import (CheckResult, Part, Stop, TOLERANCES, _reference_cosine_schedule,
                      _reference_ddim_step, _reference_ddpm_step, _reference_loss,
                      _reference_mean_from_eps, _reference_p_losses, _reference_posterior,
                      _reference_q_sample, _reference_scale_to_model_range,
                      _reference_score_from_eps)
from .harness import explain_error as _explain  # noqa: F401 - the name tests and older code use
from .forward import check_cosine_schedule, check_q_sample, check_scale_to_model_range
from .reverse import check_ddpm_step, check_mean_from_eps, check_posterior
from .loss import check_loss, check_p_losses, check_score_from_eps
from .sampling import check_ddim_step
from .faster import check_dpm_solver_step, check_eps_to_v
from .network import check_res_block, check_timestep_embedding
from .training import check_ema_update
from .guidance import check_guided_eps
from .gans import check_gan_losses
from .classroom import student_seed

__all__ = ["CheckResult", "check_q_sample", "check_cosine_schedule", "check_posterior",
           "check_mean_from_eps", "check_loss", "check_p_losses", "check_ddpm_step",
           "check_ddim_step", "check_score_from_eps", "check_scale_to_model_range",
           "check_timestep_embedding", "check_res_block", "check_ema_update", "check_guided_eps",
           "check_gan_losses", "student_seed", "check_eps_to_v", "check_dpm_solver_step"]
