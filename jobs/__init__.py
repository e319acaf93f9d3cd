import time as _time

STARTED_AT = _time.time()
"""When this process imported medsweep's jobs (start-up breakdowns count from here)."""
