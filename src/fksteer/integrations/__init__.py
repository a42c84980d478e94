"""Adapters from model libraries to the engine: one package per backend, heavy imports inside.

    from fksteer.diffusers import steer_pipeline, UNetStepModel, DiffusersOptions
    from fksteer.integrations.masked import MaskedDiffusionModel, TransformersDenoiser

Packages:
- ``diffusers``: steering stock diffusers pipelines from inside their own loop, and a StepModel
  over a ``UNet2DModel`` (the public facade is :mod:`fksteer.diffusers`).
- ``masked``: masked (absorbing-state) discrete diffusion language models: schedules, denoisers,
  the sampler and its text decoding.
"""
