# One policy for every consumer (trading bot) of every credential: a templated policy whose paths
# come from the identity of the token that uses it, so 20 bots share this one policy instead of 20
# hand-edited copies of consumer-policy.hcl. Each bot's Vault entity carries two metadata keys, set
# when the bot is enrolled:
#   credential   the credential's name in the worker's config, published at polymarket/<credential>
#   consumer_id  the bot's consumer_id in rotator.consumer (the name of its acknowledgement)
#
#   bao policy write rotator-consumer deploy/vault/consumer-fleet-policy.hcl
#   bao write identity/entity name=bot-1 policies=rotator-consumer \
#       metadata=credential=market-maker-1 metadata=consumer_id=bot-1
#   bao write identity/entity-alias name=<the bot's login name> canonical_id=<the entity's id> \
#       mount_accessor=<its auth method's accessor>
#
# The alias ties the bot's logins to its entity: with Kubernetes auth, the alias name is the service
# account's UID (or namespace/name with alias_name_source=serviceaccount_name); with AppRole, the
# role id; with userpass, the user name. A token without those metadata keys resolves these paths to
# nothing and can read nothing. Written for the defaults (mount `secret`, state_prefix
# `rotator-state`, credentials published under polymarket/): change the paths with the config.
#
# As in consumer-policy.hcl: rotation state (secret/data/rotator-state/<credential>) is deliberately
# absent, as are lists, metadata and every other write.

# The published key of the bot's credential: only ever a verified one.
path "secret/data/polymarket/{{identity.entity.metadata.credential}}" {
  capabilities = ["read"]
}

# This bot's acknowledgement (and refusal report) under its own consumer id, and no other bot's:
# `read` lets a restarted bot learn its record's version, every write being a check-and-set.
path "secret/data/rotator-state/{{identity.entity.metadata.credential}}/acks/{{identity.entity.metadata.consumer_id}}" {
  capabilities = ["create", "read", "update"]
}
