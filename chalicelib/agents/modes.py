"""Agent inputs that take one of several shapes ("modes"), told apart by a key.

`ModeInput[Annotated[A | B, Discriminator(pick)]]` is a root model over a tagged
union: the picker chooses the member from the raw input, so the user gets the
chosen shape's violations only (not one list per member, as a plain union
reports). Pydantic prefixes those violations with the member's tag; the user
never wrote that tag, so it is dropped and `input_data.content` reads as it does
for a single-shape input. The JSON Schema says `type: object` with a `oneOf` of
the shapes, which is what `GET /agent-types` advertises.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar, get_args

from pydantic import ConfigDict, RootModel, ValidationError, ValidatorFunctionWrapHandler, model_validator
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError
from pydantic_core.core_schema import ErrorType

T = TypeVar("T")
_BUILTIN_TYPES = frozenset(get_args(ErrorType))


class ModeInput(RootModel[T], Generic[T]):
    model_config = ConfigDict(json_schema_extra={"type": "object"})
    #: the key that names the mode, when there is one: an unknown mode is reported at that key.
    mode_key: ClassVar[str | None] = None

    @model_validator(mode="wrap")
    @classmethod
    def _locate_errors_in_the_users_terms(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            # An error with an empty loc is about the union itself (an unknown mode): reported at the mode key.
            details = [
                InitErrorDetails(type=_error_type(err),
                                 loc=tuple(err["loc"][1:]) if err["loc"] else cls._mode_loc(value),
                                 input=err["input"], ctx=err.get("ctx", {}))
                for err in exc.errors()
            ]
            raise ValidationError.from_exception_data(exc.title, details) from None

    @classmethod
    def _mode_loc(cls, value: Any) -> tuple[str, ...]:
        return (cls.mode_key,) if cls.mode_key is not None and isinstance(value, dict) and cls.mode_key in value else ()


def _error_type(err: ErrorDetails) -> str | PydanticCustomError:
    """Pydantic's own error types are rebuilt by name; a custom one (say, an unknown mode) by its message."""
    if err["type"] in _BUILTIN_TYPES:
        return err["type"]
    # The message is final already; with no context nothing in it is read as a {placeholder}.
    return PydanticCustomError(err["type"], err["msg"])
