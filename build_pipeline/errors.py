"""One error type for everything a user can get wrong, so the CLI can print it the same way."""


class BuildError(Exception):
    """A problem the user can fix: says what is wrong and what to do about it."""

    def __init__(self, problem: str, fix: str):
        super().__init__(f"{problem}\n  fix: {fix}")
        self.problem = problem
        self.fix = fix
