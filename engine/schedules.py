"""Learning-rate schedules. `e` is the number of COMPLETED epochs: epoch 1 trains at e = 0,
i.e. at the base learning rate lr; E = lr_decay_epochs, d = lr_decay.

    constant      lr
    step          lr * d ** floor(e / E)
    exponential   lr * d ** (e / E)
    inverse_time  lr / (1 + k * e),  k = (1/d - 1) / E   (so it is lr * d at e = E)
    plateau       lr, multiplied by d each time the monitored loss has gone E epochs without
                  improving (strictly below its best so far); the wait then restarts from 0
"""

from __future__ import annotations

import math

from engine.hyperparameters import Hyperparameters


class LearningRateSchedule:
    """The learning rate for the next epoch; stateless except for plateau."""

    needs_monitor = False  # True: call `observe` with the monitored loss after every epoch

    def __init__(self, base_rate: float, decay: float, decay_epochs: int) -> None:
        self.base_rate = base_rate
        self.decay = decay
        self.decay_epochs = decay_epochs

    def rate(self, epochs_completed: int) -> float:
        return self.base_rate

    def observe(self, monitored_loss: float) -> None:
        """Plateau's hook: the monitored loss after an epoch. Others ignore it."""


class StepSchedule(LearningRateSchedule):
    def rate(self, epochs_completed: int) -> float:
        return self.base_rate * self.decay ** (epochs_completed // self.decay_epochs)


class ExponentialSchedule(LearningRateSchedule):
    def rate(self, epochs_completed: int) -> float:
        return self.base_rate * self.decay ** (epochs_completed / self.decay_epochs)


class InverseTimeSchedule(LearningRateSchedule):
    def rate(self, epochs_completed: int) -> float:
        k = (1.0 / self.decay - 1.0) / self.decay_epochs
        return self.base_rate / (1.0 + k * epochs_completed)


class PlateauSchedule(LearningRateSchedule):
    needs_monitor = True

    def __init__(self, base_rate: float, decay: float, decay_epochs: int) -> None:
        super().__init__(base_rate, decay, decay_epochs)
        self.current = base_rate
        self.best = math.inf
        self.wait = 0

    def rate(self, epochs_completed: int) -> float:
        return self.current

    def observe(self, monitored_loss: float) -> None:
        if monitored_loss < self.best:
            self.best = monitored_loss
            self.wait = 0
            return
        self.wait += 1
        if self.wait >= self.decay_epochs:
            self.current *= self.decay
            self.wait = 0


_SCHEDULES: dict[str, type[LearningRateSchedule]] = {
    "constant": LearningRateSchedule,
    "step": StepSchedule,
    "exponential": ExponentialSchedule,
    "inverse_time": InverseTimeSchedule,
    "plateau": PlateauSchedule,
}


def make_schedule(hp: Hyperparameters) -> LearningRateSchedule:
    return _SCHEDULES[hp.lr_schedule](hp.learning_rate, hp.lr_decay, hp.lr_decay_epochs)
