"""Shared fixtures: paths, the real corpora in ../shared (skipped with a reason where absent),
and a real local Slurm cluster for the integration tier."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("MEDSWEEP_SHARED_DATA", ROOT.parent / "shared" / "data"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "bc5cdr" / "train.json").is_file():
        pytest.skip(f"the real corpora are not here ({SHARED_DATA}); they live in the "
                    "developers' ../shared folder, not in a user's clone")
    return SHARED_DATA


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from core.demo_data import write_demo_data

    return write_demo_data(tmp_path_factory.mktemp("demo"), n_train=64, n_dev=12)


def job_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    path = os.pathsep.join(p for p in (env.get("PYTHONPATH", ""), str(ROOT)) if p)
    env.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                "PYTHONPATH": path, "OMP_NUM_THREADS": "1"})
    env.update(extra)
    return env


def run_module(module: str, *args: str, env: dict[str, str] | None = None,
               cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                          env=env or job_env(), cwd=cwd or ROOT, timeout=timeout)


@dataclass
class FinishedDemo:
    """The bundled demo sweep run once as a user runs it (`python -m launcher submit` in an
    empty folder): the folder and what the command printed."""

    cwd: Path
    stdout: str

    @property
    def sweep(self) -> Path:
        return self.cwd / "runs" / "demo"


@pytest.fixture(scope="session")
def finished_demo(tmp_path_factory: pytest.TempPathFactory) -> FinishedDemo:
    """One demo sweep shared by the slow tests that need a finished one (the README's
    commands, the report in a browser): about two minutes on a 2-core machine, paid once."""
    cwd = tmp_path_factory.mktemp("demo-sweep")
    env = job_env()
    env["PYTHONPATH"] = str(ROOT) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    demo = subprocess.run([sys.executable, "-m", "launcher", "submit"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)
    assert demo.returncode == 0, demo.stderr[-2000:]
    return FinishedDemo(cwd, demo.stdout)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real single-node Slurm with accounting (ci/slurm-local-up.sh), torn down after.

    Reuses a running cluster when MEDSWEEP_SLURM_CONF names one (as .ci/run may do).
    """
    preset = os.environ.get("MEDSWEEP_SLURM_CONF")
    if preset:
        os.environ["SLURM_CONF"] = preset
        yield Path(preset).parent.parent
        return
    if os.environ.get("MEDSWEEP_SKIP_SLURM") == "1":
        pytest.skip("MEDSWEEP_SKIP_SLURM=1: the real-Slurm tier was switched off explicitly")
    # munged refuses socket folders whose parents are not world-executable (0700 tmp dirs).
    base = Path(os.environ.get("MEDSWEEP_SLURM_STATE", "/tmp/medsweep-slurm-test"))
    state = base / f"state-{os.getpid()}"
    state.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(state.parent, 0o755)
    up = subprocess.run(["bash", str(ROOT / "ci" / "slurm-local-up.sh"), str(state)],
                        capture_output=True, text=True, timeout=600)
    if up.returncode != 0:
        pytest.fail(f"could not start the local Slurm: {up.stderr[-2000:]}")
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
    try:
        yield state
    finally:
        subprocess.run(["bash", str(ROOT / "ci" / "slurm-local-down.sh"), str(state), "--purge"],
                       capture_output=True, text=True, timeout=300)
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old


class IdTokenizer:
    """The little of a tokenizer jobs.evaluate.generate_all reads: ids decode to <id>."""

    pad_token_id = 0
    eos_token_id = 1

    def decode(self, ids, skip_special_tokens=False):
        return "".join(f"<{i}>" for i in ids if not (skip_special_tokens and i in (0, 1)))


def tiny_llama():
    """A random 2-layer Llama (float32, CPU, eval mode) over IdTokenizer's ids."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, pad_token_id=0, bos_token_id=2,
                      eos_token_id=1)
    return LlamaForCausalLM(cfg).eval()
