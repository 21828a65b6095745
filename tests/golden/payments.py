"""The decoding migration of the golden tests: its comparator ignores the raw frame echoed back."""

import cutover
from cutover.compare import structural

from .codecs import legacy_decode, new_decode

decoding = cutover.Migration(
    "payments.decode", legacy_decode, new_decode, compare=structural(ignore=["$.raw"])
)
