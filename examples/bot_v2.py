"""A bot on py-clob-client-v2 that never notices a rotation (``pip install 'polymarket-rotator[vault,v2]'``,
or your store's extra; deprecated by Polymarket in favour of the unified SDK, see ``bot_unified.py``).

Same config, flags and summary as ``bot.py``; every ``--every`` seconds it sends one heartbeat. The key
is swapped on the live ``ClobClient`` (``set_api_creds``) the moment the store publishes a new one::

    BOT_WALLET_KEY=0x... ROTATOR_FILE_KEY=... python examples/bot_v2.py -c rotator.yaml --credential mm1
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
        client = connect(source, host, private_key=wallet_key, sdk="v2", chain_id=args.chain_id)
        source.start()  # once the client listens: each key is acknowledged once the client holds it
        beat = {"id": ""}

        def request() -> None:
            beat["id"] = client.post_heartbeat(beat["id"])["heartbeat_id"]

        summary = run(args, source, client, request)
    print(json.dumps(summary), flush=True)
    return 0 if client.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
