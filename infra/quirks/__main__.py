"""python -m infra.quirks [BOOTSTRAP]: print every reproduction (embedded broker on disk, as the hub runs
it, if no address is given)."""
import asyncio
import json
import sys
import tempfile

from infra.broker import EmbeddedBroker
from infra.quirks.reproductions import run_all

if len(sys.argv) > 1:
    print(json.dumps(asyncio.run(run_all(sys.argv[1])), indent=2))
else:
    with tempfile.TemporaryDirectory() as logs, EmbeddedBroker(logs, "disk") as broker:
        print(json.dumps(asyncio.run(run_all(broker.bootstrap_servers)), indent=2))
