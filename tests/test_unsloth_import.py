"""jobs.unsloth_import: Unsloth's import rewrites TRL's SFT trainer and no other.

On a CPU Unsloth skips the trainer rewriting at import (UNSLOTH_ALLOW_CPU), so the test calls
the function its import would call on a GPU, in a fresh interpreter, and checks which of TRL's
trainers came out rewritten.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import json, sys, time
from jobs.modeling import import_unsloth
import_unsloth()
from unsloth.models import rl
t = time.perf_counter()
rl.patch_trl_rl_trainers()   # what PatchFastRL calls at import on a GPU
took = time.perf_counter() - t
import trl.trainer.sft_trainer as sft, trl.trainer.grpo_trainer as grpo, trl.trainer.dpo_trainer as dpo
import trl
print(json.dumps({
    "trimmed": list(getattr(rl.patch_trl_rl_trainers, "medsweep_trimmed", [])),
    "hook_left": [type(f).__name__ for f in sys.meta_path if type(f).__name__ == "_Finder"],
    "sft": sft.SFTTrainer.__name__, "trl_sft": trl.SFTTrainer.__name__,
    "grpo": grpo.GRPOTrainer.__name__, "dpo": dpo.DPOTrainer.__name__, "s": took}))
"""


def test_importing_unsloth_rewrites_the_sft_trainer_alone(tmp_path):
    pytest.importorskip("unsloth")
    env = dict(os.environ, UNSLOTH_ALLOW_CPU="1", HF_HUB_OFFLINE="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["trimmed"] == ["sft_trainer"]
    assert got["hook_left"] == []                          # the import hook is gone afterwards
    assert got["sft"] == got["trl_sft"] == "UnslothSFTTrainer"  # Unsloth's SFT trainer, as before
    assert got["grpo"] == "GRPOTrainer" and got["dpo"] == "DPOTrainer"  # TRL's own, untouched


GPU_PROBE = """
import json
from jobs.modeling import import_unsloth
import_unsloth()   # on a GPU the import itself rewrites the trainers
import trl.trainer.sft_trainer as sft, trl.trainer.grpo_trainer as grpo
from unsloth.models import rl
print(json.dumps({"trimmed": list(getattr(rl.patch_trl_rl_trainers, "medsweep_trimmed", [])),
                  "sft": sft.SFTTrainer.__name__, "grpo": grpo.GRPOTrainer.__name__}))
"""


@pytest.mark.gpu
def test_on_a_gpu_the_import_itself_rewrites_the_sft_trainer_alone(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "UNSLOTH_ALLOW_CPU"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", GPU_PROBE], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"trimmed": ["sft_trainer"], "sft": "UnslothSFTTrainer", "grpo": "GRPOTrainer"}
