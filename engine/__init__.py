"""scratchnet's engine: datasets, networks, backpropagation, optimizers, training, pictures.

Pure NumPy (plus scikit-learn's dataset generators and matplotlib's Agg backend); it never
imports anything from the web layer. Modules:

    hyperparameters  the one definition of every training option
    datasets         generators, scikit-learn's bundled sets, user points, splits, scaling
    activations      the one table of hidden activations and their derivatives; softmax
    network          forward and backward passes, the loss, initialisation
    optimizers       gradient descent, momentum, Nesterov, Adam
    schedules        learning-rate schedules
    training         the one training loop: history, early stopping, budgets, cancellation
    packed/          many networks trained as one (sweeps), each as `training` would alone:
                     network (the flat layout), passes, trainer, planner
    model            a trained model and inference
    plotting         PNG pictures: data, decision boundaries, loss curves
    serialize        model <-> .npz, no pickle
    errors           the exceptions above raise
"""
