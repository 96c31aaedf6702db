# Policy for one consumer (a trading bot) of one credential. For a fleet, consumer-fleet-policy.hcl
# serves every bot with one policy (paths from each bot's identity). Write one copy per bot, naming that
# bot's credential (here `market-maker-1`, published at polymarket/market-maker-1 on the KV v2
# mount `secret`) and its consumer id (here `bot-1`, the `consumer_id` of rotator.consumer).
#
#   bao policy write consumer-market-maker-1-bot-1 deploy/vault/consumer-policy.hcl
#
# Rotation state (secret/data/rotator-state/<credential>) holds unverified and retiring keys and is
# deliberately absent here, as are lists, metadata and every other write.

# The published key: only ever a verified one.
path "secret/data/polymarket/market-maker-1" {
  capabilities = ["read"]
}

# Optional: this bot's acknowledgement of the key it loaded (no secret in it: a masked key id and a
# time), which lets the worker revoke the previous key before the grace ends. The worker files an
# acknowledgement under the consumer named by its path, so grant each bot its own id only; without
# this stanza the bot is a read-only consumer and the worker waits for the full grace. `read` lets
# a restarted bot learn its acknowledgement's version: every write is a check-and-set (as a mount
# with cas_required=true demands), and that one path is all it can read. The same record carries
# the bot's report of a key the CLOB refused while it was published (docs/consumers.md "A key refused in
# production"), so reports need no other path.
path "secret/data/rotator-state/market-maker-1/acks/bot-1" {
  capabilities = ["create", "read", "update"]
}
