"""Reading the YAML/JSON documents users write (rule sets, inventories): one parser for all.

A JSON document is read by orjson, anything else by libyaml's parser when PyYAML has it.
PyYAML's pure-Python parser builds a few hundred bytes of objects per scalar: a 1.3 MB
rule set of 12 k rules (bench/worker.py's) took it 14 s and left the worker +120 MB larger
for good (freed, but scattered over memory pages that stay in use); libyaml 1.5 s and
+67 MB; orjson 0.02 s and +8 MB.
"""

from __future__ import annotations

from typing import Any

import orjson
import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_document(text: str) -> Any:
    """The data of a JSON or YAML document; raises ``yaml.YAMLError`` for one that is neither."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass  # not JSON: YAML, which JSON is a subset of, says what is wrong with it
    return yaml.load(text, Loader=_LOADER)


def document_tree(text: str) -> yaml.Node | None:
    """The document's node tree, whose marks give each value's line (for error messages)."""
    return yaml.compose(text, Loader=_LOADER)
