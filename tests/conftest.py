import os

# Keep numeric libraries from oversubscribing the 2 cores CI has.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")
