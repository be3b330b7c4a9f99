"""The solver layer (issue 13): the batched native interior-point method for the convex BN-ReLU
program, built on the program's conic form.

- ``problem``: a batch of programs as tensors, the losses in prediction space, the dual bound;
- ``cones``: Jordan algebra and Nesterov-Todd scaling of the orthant and second-order cones;
- ``kkt``: the conic form (G, h), the KKT residual and the stopping criteria;
- ``newton``: the Newton system, factorized by Woodbury over the predictions;
- ``interior_point``: the batched Mehrotra predictor-corrector method;
- ``implicit``: the solution as a differentiable function of the data;
- ``threads``: torch's intra-op threads during a solve.

Imports run one way: this package uses ``convexnorm.losses`` and ``convexnorm.errors`` only;
``convexnorm.nn`` and ``convexnorm.convex`` build on it.
"""
