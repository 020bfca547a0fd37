"""eidsl's compiler: lowering of the graph IR to PyTorch, passes over the plan, runtime ops."""
