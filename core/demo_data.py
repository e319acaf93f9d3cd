"""The project's own demo data: synthetic clinical sentences in the seed's format.

Written by ``python -m launcher demo-data`` (and by the demo sweep on first use), never
copied from a licensed corpus. Deterministic: the same seed gives the same files.
"""

from __future__ import annotations

import random
from pathlib import Path

from core.data import ids_path
from core.fileio import atomic_write_json

DISEASES = ["type 2 diabetes", "hypertension", "asthma", "pneumonia", "atrial fibrillation",
            "migraine", "chronic kidney disease", "heart failure", "hypothyroidism",
            "rheumatoid arthritis", "COPD", "sepsis", "anemia", "gout", "epilepsy"]
DRUGS = ["metformin", "lisinopril", "salbutamol", "amoxicillin", "apixaban", "sumatriptan",
         "furosemide", "levothyroxine", "methotrexate", "prednisone", "allopurinol",
         "levetiracetam", "atorvastatin", "insulin glargine", "ceftriaxone"]
DOSES = ["500 mg", "10 mg", "2 puffs", "1 g", "5 mg", "50 mg", "40 mg", "100 mcg", "15 mg",
         "20 units", "300 mg", "250 mg"]
FREQS = ["twice daily", "once daily", "every 8 hours", "at bedtime", "as needed",
         "three times a day", "weekly"]
SYMPTOMS = ["chest pain", "shortness of breath", "fever", "headache", "fatigue", "cough",
            "dizziness", "nausea", "palpitations", "leg swelling"]

TEMPLATES = [
    ("The patient has {Disease} and takes {Medication} {Dosage} {Frequency}.",),
    ("Prescribed {Medication} {Dosage} {Frequency} for {Disease}.",),
    ("She presented with {Symptom} and {Symptom2}; a diagnosis of {Disease} was made.",),
    ("History of {Disease}. Started on {Medication}.",),
    ("He reports {Symptom} since Monday.",),
    ("No known allergies. Vital signs stable.",),
    ("{Medication} was stopped because of {Symptom}.",),
    ("Known {Disease}, well controlled on {Medication} {Dosage}.",),
]


def make_records(n: int, rng: random.Random) -> list[dict]:
    out = []
    for _ in range(n):
        (tpl,) = rng.choice(TEMPLATES)
        sym = rng.sample(SYMPTOMS, 2)
        values = {"Disease": rng.choice(DISEASES), "Medication": rng.choice(DRUGS),
                  "Dosage": rng.choice(DOSES), "Frequency": rng.choice(FREQS),
                  "Symptom": sym[0], "Symptom2": sym[1]}
        text = tpl.format(**values)
        ents = []
        pos = 0
        # Entities in order of appearance, with the slot's label (Symptom2 is a Symptom).
        while True:
            start = tpl.find("{", pos)
            if start == -1:
                break
            end = tpl.find("}", start)
            slot = tpl[start + 1:end]
            ents.append({"label": "Symptom" if slot == "Symptom2" else slot,
                         "text": values[slot]})
            pos = end + 1
        out.append({"text": text, "entities": ents})
    return out


DEMO_TRAIN, DEMO_EVAL = "demo:train", "demo:eval"
DEMO_FILES = {DEMO_TRAIN: "train.json", DEMO_EVAL: "dev.json"}
"""A demo sweep's data references and the files write_demo_data writes for them."""


def demo_path(ref: str, folder: Path) -> str:
    """A data reference with a demo one (demo:train) replaced by its file in folder."""
    return str(folder / DEMO_FILES[ref]) if ref in DEMO_FILES else ref


def demo_ref(path: str, folder: Path) -> str:
    """demo_path's inverse: a file of the demo folder back to its reference (the config as
    the sweep gave it, which the run id's hash is of)."""
    return next((ref for ref, name in DEMO_FILES.items() if path == str(folder / name)), path)


def write_demo_data(folder: str | Path, n_train: int = 240, n_dev: int = 40,
                    seed: int = 7) -> tuple[Path, Path]:
    folder = Path(folder)
    rng = random.Random(seed)
    train, dev = folder / DEMO_FILES[DEMO_TRAIN], folder / DEMO_FILES[DEMO_EVAL]
    for path, n in ((train, n_train), (dev, n_dev)):
        atomic_write_json(path, make_records(n, rng))
        # Documents of four sentences, for data.context_sentences.
        atomic_write_json(ids_path(path), [f"demo{i // 4}:s{i % 4}" for i in range(n)])
    return train, dev
