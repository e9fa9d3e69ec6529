"""Many configurations of one sweep trained together: several networks packed into one.

Packing. K networks of the same depth train as ONE network. Every network sees the same input,
so the first layer is one dense (n_features + 1, Σh₁) matrix of their blocks side by side and
one product computes every network's first layer. A later layer is either one block-diagonal
(Σ fan_in + 1, Σ fan_out) matrix with one bias row (one product for all networks, the padding
between blocks multiplied by zero) or one block per network, whichever costs less (a product
has a fixed cost of a few microseconds; padding costs multiply-adds). The logits are
class-major, (C, K, m): row c·K + k of the (C·K, m) output is network k's class c, softmaxed per
network. One flat parameter vector holds everything, so an optimizer step is one
`engine.optimizers` step for all K networks, with per-parameter learning rates, l1, l2 and
momentum (`engine.optimizers.Grouped`); the padding gets rate 0 and so stays exactly zero.

Minibatch networks shuffle with their own generators. Networks whose generators are in the same
state after initialisation share one input stream (an "input group"); with several groups each
gets its own rows of a block-diagonal first layer, fed its own batch side by side.

Exactness. Each network trains as `engine.training.train` trains it alone, up to rounding (a
packed product sums in its own order): the same initialisation (`init_params` on its own
`default_rng(seed)`), activation functions, loss, floating-point update steps, schedule, early
stopping, history and divergence rules. Rounding differences are amplified where training
itself is unstable (large learning rates), so two runs agree to ~1e-15 in calm stretches and
may drift apart for a while (the tutorial's sweep: ~1e-5 relative after 4000 epochs).

Isolation. A network whose values become non-finite must not reach the others, yet 0·NaN = NaN
in a block-diagonal product. So every array is checked (one sum) before it meets a
block-diagonal matrix; a network whose columns are not finite has them zeroed and fails alone,
diverged in that epoch. After every update the parameters are checked too. A network that
finished or failed has its block zeroed and frozen (rate 0) while the others go on.

Modules:

    network   PackedNetwork: the flat parameter vector and each network's place in it
    passes    PackedWorkspace: forward and backward passes, block by block, with the checks
    trainer   PackTrainer: one pack's training loop under train's rules
    train     train_pack(hps, ...): one pack trained as one network;
              train_many(hps, ...): packs and single configurations one after another
    planner   pack_key(hp, n_train): configurations with equal keys may share a pack;
              partition(hps, shape): configurations split between workers, balanced, in packs
"""

from engine.packed.network import PackedNetwork, packed_shapes
from engine.packed.passes import PackedWorkspace
from engine.packed.planner import DataShape, estimate_seconds, pack_key, partition, plan_packs
from engine.packed.train import train_many, train_pack
from engine.packed.trainer import ConfigurationOutcome, FinishCallback, RecordCallback

__all__ = [
    "ConfigurationOutcome",
    "DataShape",
    "FinishCallback",
    "PackedNetwork",
    "PackedWorkspace",
    "RecordCallback",
    "estimate_seconds",
    "pack_key",
    "packed_shapes",
    "partition",
    "plan_packs",
    "train_many",
    "train_pack",
]
