"""Upper bounds of the counts a caller gives `render_set`: far above any useful mixing set (the
paper's has 14,000 pictures), far below what could exhaust a machine before a picture is written."""

MAX_PICTURES = 1_000_000
MAX_WORKERS = 1024
MAX_SEED = 2**63 - 1
