"""``key=value`` command-line arguments (the Hydra override style) for the non-Hydra tools."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from genarena.errors import ConfigError


@dataclass
class Arg:
    parse: Callable[[str], Any]
    default: Any
    help: str


def as_bool(text: str) -> bool:
    low = text.lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean (true/false)")


def optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda text: None if text.lower() in ("null", "none", "") else parse(text)


def parse_args(prog: str, doc: str, spec: dict[str, Arg], argv: list[str] | None = None) -> dict[str, Any]:
    """Parse ``key=value`` pairs against ``spec``; unknown keys and bad values raise :class:`ConfigError`.
    ``--help`` prints ``doc`` and the accepted keys."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(doc.strip() + "\n\narguments:")
        for key, arg in spec.items():
            print(f"  {key}={arg.default!s:<12} {arg.help}")
        raise SystemExit(0)
    values = {k: a.default for k, a in spec.items()}
    for item in argv:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"{prog}: expected key=value, got {item!r} (see {prog} --help)")
        if key not in spec:
            raise ConfigError(f"{prog}: unknown argument {key!r}; accepted: {', '.join(spec)}")
        try:
            values[key] = spec[key].parse(text)
        except ValueError as e:
            raise ConfigError(f"{prog}: {key}={text!r} is invalid ({e})") from None
    missing = [k for k, v in values.items() if v is ...]
    if missing:
        raise ConfigError(f"{prog}: missing required argument(s) {', '.join(f'{k}=...' for k in missing)}")
    return values


def run_tool(prog: str, fn: Callable[[], Any]) -> None:
    """Run a tool's main; report genarena errors as one line on stderr and exit 2."""
    from genarena.errors import GenArenaError

    try:
        fn()
    except GenArenaError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
