import atexit
import os
import shutil
import tempfile

# Keep numeric libraries from oversubscribing the 2 cores CI has.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "2")
# Caches a run writes (the mixing bank's) go to a folder of this test session, not the user's.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="ipmix-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)
