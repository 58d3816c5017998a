"""Errors the command line turns into one line on stderr and an exit code."""


class InputError(Exception):
    """Bad input from the user (a file, a value, a flag): exit code 2. Not a ValueError, so a
    library's ValueError is never taken for one of ours."""

    exit_code = 2


class CheckFailed(Exception):
    """A check ran and failed (a gate, a hash, a tolerance): exit code 1."""

    exit_code = 1


class MissingDependency(InputError):
    """An optional extra is not installed."""

    def __init__(self, module: str, extra: str):
        super().__init__(f"{module} is not installed; install it with: pip install 'edgefashion[{extra}]'")
        self.module, self.extra = module, extra

    def __reduce__(self):  # raised in a worker process, it is pickled back to the caller
        return type(self), (self.module, self.extra)


class Unsupported(InputError):
    """A model the chosen backend cannot run (a float model on the numpy backend): selftest
    reports it as skipped, not failed."""
