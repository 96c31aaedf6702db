"""Where a nothing-due ``rotator rotate --all`` spends its time, phase by phase (run as a child).

``python bench/startup_phases.py CONFIG`` does what ``rotator rotate --all -c CONFIG`` does for its
first credential, in the same order, timing each step, and prints ``{"phase": ms, ...}`` as JSON.
The imports are split out of the steps that trigger them, so each library shows its own cost.
"""

from __future__ import annotations

import json
import os
import sys
import time

_laps: dict[str, float] = {}
_last = time.perf_counter()


def lap(name: str) -> None:
    global _last
    now = time.perf_counter()
    _laps[name] = round((now - _last) * 1000, 1)
    _last = now


def main(config: str) -> None:
    import rotator.cli  # noqa: F401 - what `rotator` loads before parsing arguments

    lap("rotator.cli")
    from pydantic import BaseModel, Field, model_validator  # noqa: F401 - its lazy API too

    lap("import pydantic")
    import yaml  # noqa: F401

    lap("import yaml")
    from rotator import config as rc

    lap("rotator.config (its models)")
    import prometheus_client  # noqa: F401

    lap("import prometheus_client")
    from rotator.logs import setup_logging
    from rotator.runtime import Runtime

    lap("the rest of rotator")
    settings = rc.load_settings(config)
    setup_logging(settings.log.format, settings.log.level)
    rt = Runtime(settings, dict(os.environ))
    lap("load and validate the config")
    import botocore.session  # noqa: F401

    lap("import botocore")
    rt.validate()
    lap("build the Secrets Manager client")
    import httpx  # noqa: F401

    lap("import httpx")
    rt.clob._client()  # private: to time the CA bundle apart from the requests
    lap("httpx client (loads the CA bundle)")
    cred = settings.credentials[0]
    result = rt.rotator.run_pass(rt.ref(cred), rt.signer(cred), rt.policy(cred))
    lap(f"the pass ({result.outcome}: state read, /time, probe)")
    rt.close()
    print(json.dumps(_laps))


if __name__ == "__main__":
    main(sys.argv[1])
