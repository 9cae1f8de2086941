"""Optional packages really missing (a package on the path that fails to import, as a missing one
does): every command that needs one ends in one `Error:` line naming the extra; --help works."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ipmix_cli.common.errors import IpmixError
from ipmix_cli.common.optional import TORCH_FLOOR, check_torch_version

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def without(tmp_path):
    """Run `python -m ipmix_cli.cli.main ARGS` (or another module) where `import PACKAGE` fails."""
    def run(package, *argv, module="ipmix_cli.cli.main"):
        shim = tmp_path / f"no-{package}"
        (shim / package).mkdir(parents=True, exist_ok=True)
        (shim / package / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{package}'\", name={package!r})\n")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(shim), str(ROOT)]))
        return subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=300)
    return run


def _one_error_line(proc, extra):
    err = proc.stderr.strip()
    assert proc.returncode == 1, proc.stderr
    assert len(err.splitlines()) == 1 and err.startswith("Error:") and "Traceback" not in err
    assert f"pip install 'ipmix[{extra}]'" in err
    return err


@pytest.mark.parametrize("argv", [["train", "--help"], ["eval", "--help"], ["corrupt", "--help"], ["--help"]])
def test_help_works_without_torch(without, argv):
    proc = without("torch", *argv)
    assert proc.returncode == 0 and "Usage:" in proc.stdout, proc.stderr


@pytest.mark.parametrize("argv", [
    ["train", "--shards", "s", "--epochs", "1", "--out", "run"],
    ["eval", "--checkpoint", "run", "--test", "digits:test"],
])
def test_commands_that_need_torch_say_which_extra_without_it(without, argv, tmp_path):
    err = _one_error_line(without("torch", *argv), "train")
    assert "torch, which is not installed" in err
    assert not (tmp_path / "run").exists()


def test_corrupt_needs_no_torch(without, tmp_path):
    proc = without("torch", "corrupt", "--source", "digits:test", "--out", "c", "--limit", "5")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c" / "labels.npy").is_file()


def test_python_dash_m_train_without_torch_is_the_same_one_line(without):
    _one_error_line(without("torch", "train", "--shards", "s", "--epochs", "1", "--out", "run", module="ipmix_cli"),
                    "train")
    assert without("torch", "train", "--help", module="ipmix_cli").returncode == 0


def test_the_digits_source_without_scikit_learn_names_the_demo_extra(without, tmp_path):
    argv = ["shards", "build", "--source", "digits", "--out", "out", "--epochs", "1", "--recipe", "none",
            "--workers", "1"]
    err = _one_error_line(without("sklearn", *argv), "demo")
    assert "scikit-learn" in err and "digits" in err
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_the_torch_floor_is_the_one_pyproject_states():
    # torch.amp.GradScaler(device, ...), which the loop calls, appeared in torch 2.3.
    pyproject = (ROOT / "pyproject.toml").read_text()
    floor = re.search(r'train = \["torch>=(\d+)\.(\d+)"\]', pyproject)
    assert floor and (int(floor.group(1)), int(floor.group(2))) == TORCH_FLOOR == (2, 3)
    torch.amp.GradScaler("cpu", enabled=False)
    check_torch_version("2.3.0")
    check_torch_version(torch.__version__)
    for old in ("2.2.2+cu121", "2.1.0", "1.13.1"):
        with pytest.raises(IpmixError, match=r"older than 2\.3.*pip install 'torch>=2\.3'"):
            check_torch_version(old)
