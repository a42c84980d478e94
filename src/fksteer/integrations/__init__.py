"""Adapters from model libraries to the engine: one module per backend, heavy imports inside.

    from fksteer.integrations.masked_diffusion import ...   # masked text diffusion models
    from fksteer.diffusers import steer_pipeline, UNetStepModel, DiffusersOptions

Modules:
- ``masked_diffusion``: masked (discrete) text diffusion models.
- ``diffusers_schedulers``: clean-sample prediction per parameterisation (epsilon, v, sample,
  flow), per-particle scheduler history permutation or refusal, flow re-noising step.
- ``diffusers_pipeline``: steering a stock diffusers pipeline from inside its own loop by
  wrapping its scheduler (the public facade is :mod:`fksteer.diffusers`).
- ``diffusers_unet``: a StepModel over a ``UNet2DModel`` and a scheduler, run by ``steer``.
"""
