"""argparse generated from the config dataclasses, so the seed's flags work verbatim.

Values are parsed by the same ``coerce`` as YAML values, every problem is reported at once,
and flags not given on the command line stay unset (so a caller can layer them over a saved
config).
"""

from __future__ import annotations

import argparse
from typing import Any, Iterable, Sequence

from core.config import SPECS, ConfigError, FieldSpec, RunConfig, checked, coerce


def _dest(spec: FieldSpec) -> str:
    return f"cfg__{spec.section}__{spec.name}"


def add_config_flags(parser: argparse.ArgumentParser, keys: Iterable[str],
                     required: Sequence[str] = (), title: str = "configuration",
                     alias_ok: bool = True) -> None:
    group = parser.add_argument_group(title)
    for key in keys:
        spec = SPECS[key]
        flags = [spec.flag, *(spec.aliases if alias_ok else ())]
        default = "(required)" if key in required else (
            "unset" if spec.default is None else ("hidden" if spec.secret else repr(spec.default)))
        kwargs: dict[str, Any] = {
            "dest": _dest(spec), "default": None, "metavar": _metavar(spec),
            # argparse formats help with %: a literal one ("80% of the free memory") is doubled.
            "help": f"{spec.help} [{key}; default: {default}]".replace("%", "%%"),
        }
        if spec.type is bool:
            kwargs["nargs"] = "?"
            kwargs["const"] = "true"
        if key in required:
            kwargs["required"] = True
        group.add_argument(*flags, **kwargs)


def _metavar(spec: FieldSpec) -> str:
    if spec.type is bool:
        return "{true,false}"
    if spec.choices:
        return "{" + ",".join(spec.choices) + "}"
    return spec.type.__name__.upper()


def given_values(ns: argparse.Namespace) -> dict[str, str]:
    """Dotted key -> raw string for every config flag given on the command line."""
    out = {}
    for name, value in vars(ns).items():
        if name.startswith("cfg__") and value is not None:
            _, section, field = name.split("__", 2)
            out[f"{section}.{field}"] = value
    return out


def config_from_args(ns: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """Layer the given flags over base (or the defaults); ConfigError lists every problem."""
    raw = given_values(ns)
    errors = []
    typed: dict[str, Any] = {}
    for key, value in raw.items():
        spec = SPECS[key]
        try:
            typed[key] = coerce(spec, value)
        except ValueError as exc:
            errors.append(f"{spec.flag}: {exc}")
    if errors:
        raise ConfigError("\n".join(errors))
    return checked((base or RunConfig()).replace(typed))


def keys_of(*sections: str, exclude: Iterable[str] = ()) -> list[str]:
    ex = set(exclude)
    return [k for k in SPECS if k.split(".", 1)[0] in sections and k not in ex]
