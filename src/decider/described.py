"""String enums whose members each carry a one-line meaning (reason codes, key scopes): the
README's tables of them are checked against `meaning`."""

from __future__ import annotations

from enum import StrEnum
from typing import Self


class Described(StrEnum):
    """Members are declared as `NAME = "value", "what it means"`."""

    meaning: str

    def __new__(cls, value: str, meaning: str) -> Self:
        member = str.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        return member
