"""keep_freed_memory: freed blocks of a build's sizes come back without fresh pages."""

import subprocess
import sys

SCRIPT = """
import resource, sys
import numpy as np
from ipmix_cli.common.heap import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for k in range(12):  # blocks that grow a little each time, as a build's chunk buffers can
    a = np.empty((2 << 20) + k * 65536, np.uint8)
    a.fill(1)  # touch every page
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    res = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return int(res.stdout)


def test_freed_blocks_are_reused_without_new_page_faults():
    pages = (2 << 20) // 4096
    default, kept = _page_faults("default"), _page_faults("keep")
    # glibc's default maps each block afresh when it outgrows the last: ~a block's pages each time
    assert default > 8 * pages
    # kept: the first block's pages and the growth, little more
    assert kept < 2 * pages
