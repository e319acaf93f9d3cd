"""Run ``jobs.evaluate`` with a stack dump every SECONDS, optionally without the answer-end stop.

A diagnosis aid for a slow or silent evaluation on the GPU machine (no debugger there):

    python benchmarks/diag_eval.py SECONDS on|off JOBS.EVALUATE-FLAGS...

``off`` replaces the answer-end stopping criterion by none, so the two can be timed on the same
model and records. Prints ``DIAG wall <s> stop <on|off>`` at the end. quality.py runs every
evaluation through it when QUALITY_EVAL_WRAPPER="benchmarks/diag_eval.py 90 off" is set.
"""

from __future__ import annotations

import faulthandler
import sys
import time
from typing import Any


def main(argv: list[str]) -> int:
    faulthandler.dump_traceback_later(float(argv[0]), repeat=True)
    import jobs.evaluate as ev

    if argv[1] == "off":
        def no_stop(*args: Any, **kwargs: Any) -> Any:
            from transformers import StoppingCriteriaList

            return StoppingCriteriaList([])

        ev.answer_end_criteria = no_stop  # type: ignore[assignment]
    t = time.time()
    try:
        return ev.main(argv[2:])
    finally:
        print("DIAG wall", round(time.time() - t, 1), "stop", argv[1], flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
