"""YAML loading that rejects duplicate keys and names the file and line on syntax errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from core.errors import UserError


class YamlError(UserError):
    """A sweep or env file problem; one line per problem, each naming the file and key."""


class _UniqueKeyLoader(yaml.SafeLoader):
    pass


def _mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, (str, int, float, bool)) and key is not None:
            raise yaml.constructor.ConstructorError(
                None, None, f"a {type(key).__name__} cannot be a key; keys are names such as "
                "peft.rank", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _depth(text: str) -> int:
    """Deepest nesting of flow brackets (a bound that needs no parse; block nesting of that
    depth is as unusual and indents far enough to hit the same limit in the parser's stack)."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise YamlError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise YamlError(f"{path}: not UTF-8 text") from None
    except IsADirectoryError:
        raise YamlError(f"{path}: is a folder; give a .yaml file") from None
    except OSError as exc:
        raise YamlError(f"{path}: cannot read ({exc.strerror})") from None
    if _depth(text) > 200:
        raise YamlError(f"{path}: nested more than 200 levels deep; sweep and env files are "
                        "flat mappings of keys")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (safe loader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}: " if mark else ""
        raise YamlError(f"{path}: {where}{exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise YamlError(f"{path}: invalid YAML: {exc}") from None
    except RecursionError:
        raise YamlError(f"{path}: nested too deeply; sweep and env files are flat mappings "
                        "of keys") from None
    if data is None:
        raise YamlError(f"{path}: file is empty")
    if not isinstance(data, dict):
        raise YamlError(f"{path}: top level must be a mapping of keys, got "
                        f"{type(data).__name__}")
    return data
