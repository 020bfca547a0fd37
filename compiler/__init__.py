"""eidsl's compiler, installed as `eidsl_compiler`: the checked graph IR lowered to a typed plan,
then to PyTorch (runtime ops, fused Functions, compiled kernels), E-I Init and sign-constrained
optimisation. It reads only `eidsl.ir` and `eidsl.errors`; the language, training and CLI sit
upstream or downstream of it and are never imported here (tests/test_architecture.py)."""
