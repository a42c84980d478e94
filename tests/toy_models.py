"""A small StepModel for engine tests whose state checks its own consistency.

Each particle carries an ``identity`` (which initial particle its path descends from) in the state
and in the model output; ``move`` fails if the two disagree, so an engine that permutes one and
not the other is caught. The walk itself is x_{i+1} = x_i + noise.
"""

from __future__ import annotations

import torch


class RandomWalk:
    """x ~ N(0, I) in ``dim`` dims, then ``num_steps`` Gaussian increments of std ``step_std``."""

    def __init__(self, num_steps: int = 5, dim: int = 2, step_std: float = 1.0):
        self.num_steps = num_steps
        self.dim = dim
        self.step_std = step_std
        self.noise_draws: list[torch.Tensor] = []  # every noise tensor the model drew

    def init(self, prompts, num_particles, generator):
        n = len(prompts) * num_particles
        x = torch.randn(n, self.dim, generator=generator)
        history = torch.zeros(n, self.num_steps, self.dim)  # a scheduler-history-like buffer
        return {"x": x, "identity": torch.arange(n), "history": history, "step": 0}

    def predict(self, state, step, generator):
        assert state["step"] == step
        output = {"identity": state["identity"].clone(), "drift": torch.zeros_like(state["x"])}
        return output, state["x"].clone()

    def move(self, state, output, step, generator):
        if not torch.equal(output["identity"], state["identity"]):
            raise AssertionError("model output and state were permuted differently")
        noise = torch.randn(state["x"].shape, generator=generator) * self.step_std
        self.noise_draws.append(noise)
        history = state["history"].clone()
        history[:, step] = state["x"]
        return {
            "x": state["x"] + output["drift"] + noise,
            "identity": state["identity"],
            "history": history,
            "step": step + 1,
        }

    def decode(self, clean, final):
        return clean

    def permute(self, state, output, ancestors):
        state = {
            "x": state["x"][ancestors],
            "identity": state["identity"][ancestors],
            "history": state["history"][ancestors],
            "step": state["step"],
        }
        output = {key: value[ancestors] for key, value in output.items()}
        return state, output

    def final_sample(self, state):
        return state["x"]


def first_coordinate(samples, prompts):
    """Reward r(x) = x[0]."""
    return samples[:, 0]
