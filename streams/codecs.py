"""Faust codecs the topology uses; each name is registered when this module is imported.

Faust's own JSON codec goes through the stdlib with a custom encoder, and it was the top
cost of a table write in the profile; state values are plain JSON types, so orjson
serves them several times faster.
"""

from __future__ import annotations

from typing import Any

import orjson
from faust.serializers import codecs

ORJSON = "citybrain-orjson"
UTF8 = "citybrain-utf8"
RECORDS = "citybrain-records"


class _OrJson(codecs.Codec):
    def _dumps(self, s: Any) -> bytes:  # the argument named as Faust's Codec names it
        return orjson.dumps(s)

    def _loads(self, s: bytes) -> Any:
        return orjson.loads(s)


class _Utf8(codecs.Codec):
    """String keys as their UTF-8 bytes, so a key reads back as the same str."""

    def _dumps(self, s: str) -> bytes:
        return s.encode()

    def _loads(self, s: bytes) -> str:
        return s.decode()


class _Records(codecs.Codec):
    """The value of a batch message is already a list of records: nothing to decode."""

    def _dumps(self, s: Any) -> Any:
        raise TypeError("batch messages are only ever consumed")

    def _loads(self, s: Any) -> Any:
        return s


codecs.register(ORJSON, _OrJson())
codecs.register(UTF8, _Utf8())
codecs.register(RECORDS, _Records())
