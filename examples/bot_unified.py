"""A bot on the unified SDK that never notices a rotation. The recommended start for new bots.

Install only what a bot needs, its store's client and this SDK (nothing of the worker):
``pip install 'polymarket-rotator[vault,unified]'`` (or ``[aws,unified]``, ``[file,unified]``).

Same config, flags and summary as ``bot.py``; every ``--every`` seconds it sends one order heartbeat
(``POST /v1/heartbeats``). The wrapper builds each ``SecureClient`` from the key just read from the
store and refuses any client the SDK put on another key (its silent nonce-0 fallback)::

    BOT_WALLET_KEY=0x... ROTATOR_FILE_KEY=... python examples/bot_unified.py -c rotator.yaml --credential mm1
"""

from __future__ import annotations

import json
import sys

from bot import open_source, parse_args, run  # examples/bot.py: config, source, loop, summary

from rotator.consumer import connect


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    source, host, wallet_key = open_source(args)
    with source:
        with connect(source, host, private_key=wallet_key, sdk="unified") as client:
            # Started once the client listens: each key is acknowledged only once a client serves it.
            source.start()
            beat = {"id": ""}

            def request() -> None:
                beat["id"] = client.send_order_heartbeat(heartbeat_id=beat["id"]).heartbeat_id

            summary = run(args, source, client, request)
        summary["fallbacks_refused"] = client.fallbacks_refused
    print(json.dumps(summary), flush=True)
    return 0 if client.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
