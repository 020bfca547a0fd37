"""eidsl's compiler: lowering of the graph IR to PyTorch, passes over the plan, runtime ops."""

# The front end's package imports the API, which imports this package's modules: loading it
# first lets `import compiler.lower` (or any module here) work as the first import of a process.
import eidsl  # noqa: E402,F401
