"""``--reward`` of `fksteer sample` and `fksteer text`: checked before any model loads.

    from fksteer.commands.reward_option import check_reward_modality, ready_reward
    check_reward_modality("toxicity", "image")     # ValueError: it scores texts
    reward = ready_reward(load_reward(name), name) # weights loaded now; errors quoted

A catalogue name says what it scores without importing anything, so a text reward given to an
image command (or the reverse) is refused at once. ``ready_reward`` loads the reward's weights
before the diffusion model, so missing weights cost seconds, not a model load, and wraps the
reward so that an exception inside it is quoted (type and message) as the user's to fix.
"""

from __future__ import annotations

from typing import Any

from fksteer.commands.errors import QuotedReward

__all__ = ["check_reward_modality", "ready_reward"]

_EXAMPLES = {"image": "clip-score, pickscore, hpsv2, aesthetic, image-reward",
             "text": "toxicity, sentiment, profanity-words, lm-likelihood, similarity"}
_COMMANDS = {"image": "fksteer sample", "text": "fksteer text"}


def check_reward_modality(name: Any, wanted: str) -> None:
    """Raise a ValueError naming ``--reward`` when the catalogue reward ``name`` does not score
    ``wanted`` samples ("text" or "image")."""
    from fksteer.rewards.registry import reward_modality

    modality = reward_modality(name)
    if modality is not None and modality != wanted:
        raise ValueError(
            f"--reward {name} scores {modality}s, but {_COMMANDS[wanted]} makes {wanted}s: pass "
            f"{'an' if wanted == 'image' else 'a'} {wanted} reward ({_EXAMPLES[wanted]}) or "
            f"package.module:function, or run {_COMMANDS[modality]} for {modality}s."
        )


def ready_reward(reward: Any, name: str) -> QuotedReward:
    """``reward`` with its model loaded now (catalogue rewards load lazily) and its errors
    quoted under ``--reward name``."""
    from fksteer.rewards.base import RewardModel

    if isinstance(reward, RewardModel):
        reward.model  # noqa: B018  (loads once; a missing weight file fails here)
    return QuotedReward(reward, f"--reward {name}")
