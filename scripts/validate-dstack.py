#!/usr/bin/env python3
"""Validates dstack run configurations (YAML) with dstack's own parser.

    scripts/validate-dstack.py FILE.yml [FILE.yml ...]

Uses `dstack._internal.core.models.configurations.parse_run_configuration`, the function the
dstack CLI and server run on every configuration, so a file that passes here is one dstack
accepts. Run it with the venv from `scripts/dstack-server.sh install`:

    ~/.cache/autodebug/dstack-venv/bin/python scripts/validate-dstack.py sessions/dstack-*.yml

Prints `ok FILE (type NAME)` per valid file and `invalid FILE: REASON` per invalid one.
Exit status: 0 all valid, 1 some invalid, 2 usage error or dstack not importable.
"""

import sys


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        import yaml
        from dstack._internal.core.models.configurations import parse_run_configuration
    except ImportError as e:
        print(
            f"cannot import dstack ({e}); run with the venv python from "
            "`scripts/dstack-server.sh install`",
            file=sys.stderr,
        )
        return 2
    invalid = 0
    for path in argv[1:]:
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
            if not isinstance(data, dict):
                raise ValueError("the file is not a YAML mapping")
            conf = parse_run_configuration(data)
            print(f"ok {path} ({conf.type} {conf.name or '<unnamed>'})")
        except Exception as e:  # every reason a file is rejected is reported, not raised
            invalid += 1
            reason = " ".join(str(e).split())
            print(f"invalid {path}: {reason}")
    return 1 if invalid else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
