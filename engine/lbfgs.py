"""L-BFGS: limited-memory quasi-Newton minimisation of a smooth function of a flat vector.

Written against a loss-and-gradient function `objective(x) -> (f, g)` of a flat parameter
vector, so any differentiable loss trains with it unchanged. One `LBFGS.iterate` is one
iteration (Nocedal & Wright, "Numerical Optimization", 2nd ed., algorithm 7.5):

    d = -H g          the two-loop recursion (algorithm 7.4) over the last m curvature pairs
                      (s = x_new - x, y = g_new - g), with H0 = gamma * I and
                      gamma = s'y / y'y of the newest pair (N&W eq. 7.20); d = -g without pairs
    x += alpha * d    alpha from a line search satisfying the strong Wolfe conditions
                      f(x + a d) <= f(x) + c1 a g'd  and  |g(x + a d)'d| <= c2 |g'd|
                      (N&W algorithms 3.5 and 3.6, cubic interpolation in the zoom)

Trial steps: the first iteration (and any after a reset: no pairs) tries `initial_step`
along -g, i.e. the gradient-descent step with that learning rate; later iterations try the
quasi-Newton step alpha = 1. The line search enlarges (doubling) or shrinks the trial step, so
`initial_step` shapes the path, not where it ends.

Safeguards:
- a pair with s'y <= CURVATURE_EPSILON * y'y (no positive curvature, as across a kink or in a
  non-convex region) is skipped, so H stays positive definite;
- a direction that is not a descent direction (g'd >= 0, from rounding) is replaced by -g;
- a line search that finds no Wolfe point within MAX_EVALUATIONS evaluations accepts the
  lowest point it found if that lowers f (no pair is stored unless its curvature is positive);
  if nothing lowered f, the memory is reset and the iteration retried along -g; if that also
  fails the iteration reports "stalled" and leaves x where it was (f cannot be lowered along
  the steepest descent direction at the precision of the arithmetic);
- a non-finite f at a trial point counts as "too far": the search shrinks the step.

Stopping: an iteration that starts where max|g| <= tolerance takes no step and reports
"converged"; so does one whose accepted point has max|g| <= tolerance (the infinity norm, as
SciPy's `gtol`). After every `iterate` the last call of `objective` was at the returned x, so a
caller may keep side results of that call (a pass's accuracy) for the new point.

Determinism: no randomness; the same objective and start give the same iterates bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

Array = np.ndarray
Objective = Callable[[Array], tuple[float, Array]]  # x -> (f, gradient); may reuse its buffer
Status = Literal["moved", "converged", "stalled"]

# Strong Wolfe constants: N&W's recommendation for quasi-Newton methods (c1 = 1e-4, c2 = 0.9),
# also SciPy's and scikit-learn's (through SciPy).
SUFFICIENT_DECREASE = 1e-4  # c1
CURVATURE = 0.9  # c2
# Objective evaluations one line search may spend: SciPy's L-BFGS-B `maxls` default (20).
MAX_EVALUATIONS = 20
# Pairs with s'y <= this * y'y are skipped: the float64 machine epsilon, L-BFGS-B's test.
CURVATURE_EPSILON = float(np.finfo(np.float64).eps)
# The zoom keeps an interpolated step this fraction of the interval away from its ends, and
# bisects otherwise (N&W section 3.5's safeguard; 0.1 as in Moré-Thuente's bracketing).
ZOOM_MARGIN = 0.1
EXTRAPOLATION = 2.0  # the bracketing phase's growth of the trial step (SciPy's dcsrch-free
# scalar_search_wolfe2 doubles it as well)


@dataclass(frozen=True)
class SearchResult:
    """What a line search along d from x0 ended with. `step` is 0.0 when nothing lowered f."""

    step: float
    loss: float
    satisfied: bool  # both strong Wolfe conditions hold at `step`
    evaluations: int


@dataclass(frozen=True)
class Iteration:
    """One iteration's outcome: its accepted step length (0.0 when it did not move)."""

    status: Status
    step: float
    evaluations: int


def _cubic_minimizer(
    a: float, fa: float, da: float, b: float, fb: float, db: float
) -> float | None:
    """The minimiser of the cubic through (a, fa, da) and (b, fb, db) (N&W eq. 3.59); None when
    it does not exist or is not finite."""
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    radicand = d1 * d1 - da * db
    if not math.isfinite(radicand) or radicand < 0:
        return None
    d2 = math.copysign(math.sqrt(radicand), b - a)
    denominator = db - da + 2.0 * d2
    if denominator == 0:
        return None
    value = b - (b - a) * (db + d2 - d1) / denominator
    return value if math.isfinite(value) else None


def strong_wolfe_search(
    objective: Objective,
    x: Array,
    x0: Array,
    f0: float,
    g0: Array,
    direction: Array,
    initial_step: float,
    gradient_out: Array,
) -> SearchResult:
    """A step along `direction` from x0 (f0, g0 there; g0'direction < 0) satisfying the strong
    Wolfe conditions, by N&W algorithm 3.5 (bracketing) and 3.6 (zoom).

    Trial points are written into `x` (x0 is left unchanged). On return x holds x0 + step *
    direction, `gradient_out` its gradient, and the last evaluation of `objective` was at x
    (re-evaluated when the accepted point was not the last one tried). With `satisfied` False
    the step is the lowest point tried (0.0, x = x0, when none was lower than f0), evaluated
    once more when it was not the last tried: at most MAX_EVALUATIONS + 1 evaluations."""
    slope0 = float(np.dot(g0, direction))
    evaluations = 0
    best_step, best_loss = 0.0, f0
    last_step = math.nan  # where the last evaluation was

    def phi(step: float) -> tuple[float, float]:
        nonlocal evaluations, best_step, best_loss, last_step
        np.multiply(direction, step, out=x)
        np.add(x, x0, out=x)
        loss, gradient = objective(x)
        evaluations += 1
        last_step = step
        np.copyto(gradient_out, gradient)
        if not math.isfinite(loss):
            return math.inf, math.nan
        if loss < best_loss:
            best_step, best_loss = step, loss
        return loss, float(np.dot(gradient_out, direction))

    def accept(step: float, loss: float, satisfied: bool) -> SearchResult:
        if step != last_step:  # the contract: the last evaluation is at the returned x
            np.multiply(direction, step, out=x)
            np.add(x, x0, out=x)
            _, gradient = objective(x)
            np.copyto(gradient_out, gradient)
            return SearchResult(step, loss, satisfied, evaluations + 1)
        return SearchResult(step, loss, satisfied, evaluations)

    def armijo(step: float, loss: float) -> bool:
        return loss <= f0 + SUFFICIENT_DECREASE * step * slope0

    def curvature(slope: float) -> bool:
        return abs(slope) <= -CURVATURE * slope0

    def zoom(
        low: float, f_low: float, d_low: float, high: float, f_high: float, d_high: float
    ) -> SearchResult:
        # Invariants (N&W 3.6): low satisfies Armijo and has the lowest f of the bracket's
        # Armijo points; (high - low) * d_low < 0, so a Wolfe point lies between them.
        while evaluations < MAX_EVALUATIONS:
            span = high - low
            trial = None
            if math.isfinite(f_high):
                trial = _cubic_minimizer(low, f_low, d_low, high, f_high, d_high)
            inner_low, inner_high = sorted((low + ZOOM_MARGIN * span, high - ZOOM_MARGIN * span))
            if trial is None or not inner_low <= trial <= inner_high:
                trial = low + 0.5 * span
            if trial in (low, high):  # the interval is below rounding
                break
            f_trial, d_trial = phi(trial)
            if not armijo(trial, f_trial) or f_trial >= f_low:
                high, f_high, d_high = trial, f_trial, d_trial
                continue
            if curvature(d_trial):
                return accept(trial, f_trial, True)
            if d_trial * (high - low) >= 0:
                high, f_high, d_high = low, f_low, d_low
            low, f_low, d_low = trial, f_trial, d_trial
        return accept(best_step, best_loss, False)

    previous, f_previous, d_previous = 0.0, f0, slope0
    step = initial_step
    while evaluations < MAX_EVALUATIONS:
        f_step, d_step = phi(step)
        if not armijo(step, f_step) or (evaluations > 1 and f_step >= f_previous):
            return zoom(previous, f_previous, d_previous, step, f_step, d_step)
        if curvature(d_step):
            return accept(step, f_step, True)
        if d_step >= 0:
            return zoom(step, f_step, d_step, previous, f_previous, d_previous)
        previous, f_previous, d_previous = step, f_step, d_step
        step *= EXTRAPOLATION
    return accept(best_step, best_loss, False)


class CurvatureMemory:
    """The last m curvature pairs (s, y) in a ring, and the two-loop product H g."""

    def __init__(self, memory: int, size: int, dtype: np.dtype) -> None:
        self.memory = memory
        self.s = np.zeros((memory, size), dtype=dtype)  # (m, P)
        self.y = np.zeros((memory, size), dtype=dtype)  # (m, P)
        self.rho = np.zeros(memory)  # 1 / s'y per pair
        self.alpha = np.zeros(memory)
        self.scratch = np.zeros(size, dtype=dtype)  # (P,)
        self.count = 0  # pairs held, <= memory
        self.newest = -1  # ring index of the newest pair
        self.gamma = 1.0  # H0 = gamma * I
        self.skipped = 0  # pairs refused for non-positive curvature

    def reset(self) -> None:
        self.count, self.newest, self.gamma = 0, -1, 1.0

    def add(self, s: Array, y: Array) -> bool:
        """Keep the pair (s, y) when s'y > CURVATURE_EPSILON * y'y; returns whether it was."""
        sy = float(np.dot(s, y))
        yy = float(np.dot(y, y))
        if not (math.isfinite(sy) and math.isfinite(yy)) or sy <= CURVATURE_EPSILON * yy:
            self.skipped += 1
            return False
        self.newest = (self.newest + 1) % self.memory
        np.copyto(self.s[self.newest], s)
        np.copyto(self.y[self.newest], y)
        self.rho[self.newest] = 1.0 / sy
        self.count = min(self.count + 1, self.memory)
        self.gamma = sy / yy
        return True

    def _order(self) -> list[int]:
        """Ring indices of the pairs held, newest first."""
        return [(self.newest - k) % self.memory for k in range(self.count)]

    def apply_inverse_hessian(self, gradient: Array, out: Array) -> Array:
        """out <- H gradient by the two-loop recursion (N&W algorithm 7.4); returns out."""
        np.copyto(out, gradient)
        order = self._order()
        for index in order:  # newest to oldest
            alpha = self.alpha[index] = float(self.rho[index]) * float(np.dot(self.s[index], out))
            np.multiply(self.y[index], alpha, out=self.scratch)
            out -= self.scratch
        out *= self.gamma
        for index in reversed(order):  # oldest to newest
            beta = float(self.rho[index]) * float(np.dot(self.y[index], out))
            np.multiply(self.s[index], float(self.alpha[index]) - beta, out=self.scratch)
            out += self.scratch
        return out


class LBFGS:
    """Minimises `objective` from x (updated in place) with `memory` pairs, stopping at
    max|g| <= tolerance. `start` evaluates the first point; each `iterate` is one iteration."""

    def __init__(
        self,
        objective: Objective,
        x: Array,
        *,
        memory: int,
        tolerance: float,
        initial_step: float,
    ) -> None:
        if memory < 1:
            raise ValueError(f"memory must be >= 1, got {memory}")
        self.objective = objective
        self.x = x  # (P,), updated in place
        self.tolerance = tolerance
        self.initial_step = initial_step
        self.pairs = CurvatureMemory(memory, x.size, x.dtype)
        self.x0 = np.empty_like(x)
        self.gradient = np.empty_like(x)  # at x
        self.g0 = np.empty_like(x)
        self.direction = np.empty_like(x)
        self.loss = math.nan
        self.iterations = 0
        self.resets = 0

    def start(self) -> float:
        """Evaluate the objective at the starting x; returns f there."""
        self.loss, gradient = self.objective(self.x)
        np.copyto(self.gradient, gradient)
        return self.loss

    def gradient_norm(self) -> float:
        """max |g| at x (the tolerance's norm)."""
        return float(np.max(np.abs(self.gradient)))

    def iterate(self) -> Iteration:
        """One iteration from x (see the module docstring)."""
        self.iterations += 1
        if self.gradient_norm() <= self.tolerance:
            return Iteration("converged", 0.0, 0)
        np.copyto(self.x0, self.x)
        np.copyto(self.g0, self.gradient)
        f0 = self.loss
        evaluations = 0
        while True:
            quasi_newton = self.pairs.count > 0
            direction = self.direction
            if quasi_newton:
                self.pairs.apply_inverse_hessian(self.g0, direction)
                np.negative(direction, out=direction)
                if not float(np.dot(self.g0, direction)) < 0:  # rounding: not a descent
                    self._reset()
                    quasi_newton = False
            if not quasi_newton:
                np.negative(self.g0, out=direction)
            trial = 1.0 if quasi_newton else self.initial_step
            result = strong_wolfe_search(
                self.objective, self.x, self.x0, f0, self.g0, direction, trial, self.gradient
            )
            evaluations += result.evaluations
            if result.step > 0.0:
                break
            if not quasi_newton:  # steepest descent lowered nothing either: x is x0 again
                return Iteration("stalled", 0.0, evaluations)
            self._reset()
        self.loss = result.loss
        # s = x - x0, y = g - g0, written into the spare buffers
        np.subtract(self.x, self.x0, out=self.x0)
        np.subtract(self.gradient, self.g0, out=self.g0)
        self.pairs.add(self.x0, self.g0)
        status: Status = "converged" if self.gradient_norm() <= self.tolerance else "moved"
        return Iteration(status, result.step, evaluations)

    def _reset(self) -> None:
        self.pairs.reset()
        self.resets += 1
