import time as _time

STARTED_AT = _time.time()
"""When this process imported medsweep's jobs (start-up breakdowns count from here)."""
WORKER_ITEM = 0
"""Which item of a warm worker (jobs.worker) this process runs now (0: not a worker)."""
