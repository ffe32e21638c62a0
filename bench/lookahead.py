"""airbench's lookahead (from hlb-cifar10): late in training, every few steps the weights are
pulled to a running average of themselves and training goes on from there. It lets a short run
move fast and still end on averaged weights (airbench94: 94% in 12 epochs instead of 13.5).

The average covers every floating-point entry of the model's state (weights and batch-norm
statistics). It starts at 30% of the run (airbench: epoch 3 of 9.9); every 5 steps the weights
become avg <- avg + (1 - rho) (w - avg) with rho = 0.95^5 (step / total)^3, so it averages more and
more strongly towards the end; at each epoch's end the weights are set to the average. Its state
travels in the checkpoint, so a resumed run continues the same average.
"""

from __future__ import annotations

import torch
from torch import nn

EVERY = 5
DECAY = 0.95
POWER = 3.0
START = 0.3  # share of the run's epochs before the first pull


class Lookahead:
    def __init__(self, model: nn.Module, epochs: int, steps_per_epoch: int,
                 average: dict | None = None) -> None:
        self.model = model
        self.total = epochs * steps_per_epoch
        self.start = round(START * epochs) * steps_per_epoch  # steps before the first pull
        self.average = average

    def step(self, done: int) -> None:
        """After the run's `done`-th optimizer step (counted from 1 over the whole run)."""
        if done <= self.start or done % EVERY:
            return
        if self.average is None:
            self.average = {k: v.detach().clone() for k, v in self.model.state_dict().items()
                            if v.is_floating_point()}
            return
        self.pull(DECAY ** EVERY * (done / self.total) ** POWER)

    def end_epoch(self) -> None:
        """The weights become the average (once there is one)."""
        if self.average is not None:
            self.pull(1.0)

    @torch.no_grad()
    def pull(self, rho: float) -> None:
        state = self.model.state_dict()
        for key, average in self.average.items():
            average.lerp_(state[key], 1 - rho)
            state[key].copy_(average)
