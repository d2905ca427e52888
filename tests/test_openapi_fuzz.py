"""Schemathesis over the running API's /openapi.json: no request, valid or not, gets a 5xx.

Every route is fuzzed (examples, boundary values, random and schema-breaking inputs, and
call sequences) with a token of the role it needs. Path parameters are drawn half of the
time from what exists (the domains, levels, the feeder, its areas and its open alert), so
the calls reach the routes' logic rather than stopping at 404. Each run draws new inputs;
a failure prints the request to reproduce it and the seed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from streams.registry import LEVELS
from streams.topics import DOMAINS
from tests.conftest import Api, wait_for
from tests.test_alerts import FEEDER, alerts, normal, outage, stack  # noqa: F401 - stack is a fixture used here
from tests.test_dashboard import ingest

MAX_EXAMPLES = 25  # per operation and phase: the whole run stays well under a minute


def config(alert_id: str) -> str:
    """schemathesis.toml: admin (⊇ operator ⊇ viewer) everywhere but ingest, which stands apart."""
    pools = {"domain": list(DOMAINS), "level": list(LEVELS), "area_id": [FEEDER[lv] for lv in LEVELS],
             "entity_id": [FEEDER["id"]], "alert_id": [alert_id]}
    lines = ['headers = { Authorization = "Bearer ta" }', "[parameters]"]
    lines += [f'{name} = {{ dictionary = "{name}", probability = 0.5 }}' for name in pools]
    for name, values in pools.items():  # JSON strings are valid TOML basic strings
        lines += [f"[dictionaries.{name}]", f"values = {json.dumps(values, ensure_ascii=False)}"]
    lines += ["[[operations]]", 'include-path-regex = "^/api/v1/ingest/"',
              'headers = { Authorization = "Bearer ti" }']
    return "\n".join(lines) + "\n"


def test_no_request_gets_a_server_error(stack: Api, tmp_path: Path) -> None:  # noqa: F811 - the imported fixture
    api = stack
    ingest(api, normal(0, 60) + outage(60, 120))
    alert_id = wait_for(lambda: alerts(api, rule="grid.outage"), timeout=60)[0]["id"]
    (tmp_path / "schemathesis.toml").write_text(config(alert_id))
    run = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "--config-file", "schemathesis.toml", "--no-color",
         "run", f"{api.url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", str(MAX_EXAMPLES), "--request-timeout", "10"],
        cwd=tmp_path, capture_output=True, text=True, timeout=240)
    print(run.stdout[-2500:])
    assert run.returncode == 0, f"{run.stdout[-12000:]}\n{run.stderr[-3000:]}\n{api.proc.output()[-5000:]}"
    selected, total, tested = map(int, re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", run.stdout).groups())
    assert selected == total == tested >= 10
