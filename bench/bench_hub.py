"""How long lawlab takes to give up on a hub endpoint that accepts connections and never
answers (a hung proxy or firewall): the reachability probe alone, and `lawlab validate`
of a spec with a hub model, judged by the probe and forced online.

The tests check the behaviour (one request, no retry storm); the seconds it costs depend
on the machine and live here. Targets: probe <= 8 s; validate <= 25 s including the
subprocess's own imports (torch).

    python bench/bench_hub.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lawlab.testing import spec_toml

# A hub model and one evaluation: validating it asks the hub about the model.
HUB_MODEL = {"name": "tiny", "source": "hub", "params": {"id": "lawlab-test/tiny-llama", "revision": "main"}}
CROSS_ENTROPY = {"evaluator": "cross-entropy", "params": {"datasets": ["tiny-corpus"], "window": 32, "batch_size": 8}}


def timed(args: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(args, env=env, capture_output=True, timeout=300)
    return time.monotonic() - started


def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # connections wait in the backlog, unanswered
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
        env.update(HF_ENDPOINT=url, HF_HOME=f"{tmp}/hf", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
        spec = Path(tmp) / "spec.toml"
        spec.write_text(spec_toml(Path(tmp, "out"), study={"name": "hub-bench"}, models=[HUB_MODEL],
                                  evaluators=[CROSS_ENTROPY]))
        probe = [sys.executable, "-c", "from lawlab import environment; environment.is_offline()"]
        validate = [sys.executable, "-m", "lawlab.cli.main", "validate", str(spec)]
        print(f"probe alone:              {timed(probe, env):6.1f} s  (target <= 8)")
        print(f"validate, probe-judged:   {timed(validate, env):6.1f} s  (target <= 25)")
        print(f"validate, forced online:  {timed(validate, {**env, 'LAWLAB_OFFLINE': '0'}):6.1f} s  (target <= 25)")
    sock.close()


if __name__ == "__main__":
    main()
