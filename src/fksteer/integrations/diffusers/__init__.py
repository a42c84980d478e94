"""Steering diffusers pipelines and UNets; the public names are in :mod:`fksteer.diffusers`.

Modules, from the entry point down:

- ``pipeline``: :func:`steer_pipeline`, one steered call of a stock pipeline.
- ``arguments``: the pipeline's keyword arguments for K particles per prompt; early refusals.
- ``run``: the scheduler proxy and the per-step work (score, reorder, step, guide).
- ``proxies``: stand-ins for the pipeline's components, swapped in for one call.
- ``decoding``: clean latents -> reward input, lazily and in chunks.
- ``result``: :class:`PipelineSteeringResult`, assembled from the pipeline's output.
- ``guidance``: reward-gradient guidance by replaying the pipeline's denoiser call.
- ``unet``: :class:`UNetStepModel`, a StepModel over a ``UNet2DModel`` for ``fksteer.steer``.
- ``schedulers``: what the engine needs from each scheduler (clean-sample prediction,
  per-particle history, Gaussian step kernels, flow re-noising).
- ``options``: :class:`DiffusersOptions`.

Importing this package imports nothing heavy; its modules import diffusers where they need it.
"""
