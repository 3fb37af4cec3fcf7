"""Child processes that a test interrupts with SIGINT must start with SIGINT's default action.

A shell without job control starts background commands with SIGINT ignored (`make test &`, nohup, some CI
runners), children inherit that, and Python only turns SIGINT into KeyboardInterrupt when it starts with the
default: the child would then ignore the test's Ctrl-C and run to the end. Pass `preexec_fn=default_sigint`.
"""

import signal


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
