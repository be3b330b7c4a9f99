"""The solver layer (issue 13): every backend that solves a convex program for convexnorm, behind
one vocabulary (``solver=``, ``solver_options=``).

- ``backends``: ``solve_program``, the one entry point of the estimators' backends ("clarabel",
  "scs", "torch") and their typed result ``ProgramSolution``;
- ``cvxpy_backend``: Clarabel and SCS through cvxpy, with retries;
- ``cvxpylayers_backend``: batches of DPP programs through cvxpylayers (the layers' and the
  block's differentiable solver="cvxpylayers");
- ``native``: solver="torch", the interior-point method behind the options every class takes;
- ``problem``: a batch of programs as tensors, the losses in prediction space, the dual bound;
- ``cones``: Jordan algebra and Nesterov-Todd scaling of the orthant and second-order cones;
- ``kkt``: the conic form (G, h), the KKT residual and the stopping criteria;
- ``newton``: the Newton system, factorized by Woodbury over the predictions;
- ``interior_point``: the batched Mehrotra predictor-corrector method;
- ``implicit``: the solution as a differentiable function of the data;
- ``threads``: torch's intra-op threads during a solve.

Imports run one way: this package builds on ``convexnorm.programs``, ``convexnorm.losses``,
``convexnorm.errors`` and ``convexnorm._validation`` only; ``convexnorm.nn`` and
``convexnorm.convex`` build on it.
"""
