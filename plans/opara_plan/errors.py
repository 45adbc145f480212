"""Every error a user can cause, under one root so callers can tell them from bugs."""


class OparaError(Exception):
    """Root of all user-caused errors: bad model, bad plan, bad inputs, unsupported ops."""


class PlanFormatError(OparaError):
    """The plan file is not a valid plan: unreadable, corrupt, wrong types or inconsistent."""


class PlanMismatchError(OparaError):
    """The plan is valid but does not fit the model, the weights, the GPU or the machine."""


class InputError(OparaError):
    """Inputs given to a runner do not match what the plan was compiled for."""


class ModelError(OparaError):
    """The model cannot be read or traced into a static graph."""


class UnsupportedOpError(ModelError):
    """The model uses an operator (or an attribute of one) that Opara cannot run."""


class ExecutionError(OparaError):
    """An op of a plan failed while it ran; the message names the node, the op and its inputs."""


class SigningError(OparaError):
    """A signing or trusted key cannot be used: unreadable, not PEM, or not an Ed25519 key; names the file."""
