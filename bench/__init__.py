"""eidsl's training benchmark (issue 5): E-I networks against their BN-SNN and "convolutions only" floor.

Run ``python -m bench [--quick] [--json OUT]`` or ``eidsl bench``. Times are medians over
interleaved repetitions after warm-up, so every model of a case sees the same machine load.
"""
