"""Which part of a multi-node build this machine makes: from --num-nodes/--node-rank, or on a
SLURM array job from its variables (IDs need not start at 0, hence SLURM_ARRAY_TASK_MIN)."""

from __future__ import annotations

import os

from ipmix_cli.common.errors import IpmixError, OptionError
from ipmix_cli.shards import limits


def _int(env, name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise IpmixError(f"{name}={env[name]!r} is not a whole number") from None


def node_part(num_nodes: int | None, node_rank: int | None, env=None) -> tuple[int, int, str]:
    """(num_nodes, node_rank, how): explicit values win; what is not given comes from
    SLURM_ARRAY_TASK_COUNT and SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN when set, else
    1 node of rank 0. `how` says which SLURM variables were used ("" for none)."""
    env = os.environ if env is None else env
    used = []
    if num_nodes is None and "SLURM_ARRAY_TASK_COUNT" in env:
        num_nodes = _int(env, "SLURM_ARRAY_TASK_COUNT")
        used.append(f"--num-nodes {num_nodes} from SLURM_ARRAY_TASK_COUNT")
    if node_rank is None and "SLURM_ARRAY_TASK_ID" in env:
        task, low = _int(env, "SLURM_ARRAY_TASK_ID"), _int(env, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in env else 0
        node_rank = task - low
        used.append(f"--node-rank {node_rank} from SLURM_ARRAY_TASK_ID={task} - SLURM_ARRAY_TASK_MIN={low}")
    num_nodes = 1 if num_nodes is None else num_nodes
    if node_rank is None:
        if num_nodes > 1:
            raise OptionError("{num_nodes} > 1 needs {node_rank} (this machine's part, 0..N-1)")
        node_rank = 0
    if not 1 <= num_nodes <= limits.MAX_NODES:
        raise OptionError("{num_nodes} must be in 1..{most} (got {got})", most=limits.MAX_NODES, got=num_nodes)
    if not 0 <= node_rank < num_nodes:
        raise OptionError("{node_rank} must be in 0..{most} (got {got})", most=num_nodes - 1, got=node_rank)
    return num_nodes, node_rank, "; ".join(used)
