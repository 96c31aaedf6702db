# Policy for the rotator worker (store.backend: vault), for the defaults
#   store.vault.mount: secret, store.vault.state_prefix: rotator-state
# and credentials published under polymarket/. Change the three paths together with the config.
#
#   bao policy write rotator deploy/vault/rotator-policy.hcl   (or: vault policy write ...)
#
# The worker reads and writes (always with check-and-set) its published keys and its rotation
# state, lists the state prefix, and nothing else: no delete, no metadata read, no other mount.

# Published keys: what consumers read. Read first, so re-publishing an unchanged key is a no-op.
path "secret/data/polymarket/*" {
  capabilities = ["create", "read", "update"]
}

# Rotation state: pending and retiring triplets, next nonce. Consumers must never get this path.
# Also covers reading consumers' acknowledgements (rotator-state/<credential>/acks/<consumer>).
path "secret/data/rotator-state/*" {
  capabilities = ["create", "read", "update"]
}

# Signer keys for `signer.source: vault` (read only, field `private_key` by default): here under
# signers/ on the store's mount, as in the chart's examples. A signer on another mount or path needs
# that path instead; a worker with no signer in Vault can drop this stanza. KV v2 policies name the
# API path: secret/data/signers/..., not secret/signers/... as the CLI shows it.
path "secret/data/signers/*" {
  capabilities = ["read"]
}

# Listing the consumers that acknowledged a key (consumer-confirmed revocation; without it the
# worker logs a warning and waits for the full grace), and the states under the prefix, so that the
# retiring keys of credentials removed from the config are still revoked (`rotate --all`, the
# daemon, `status`, `retire`).
path "secret/metadata/rotator-state/*" {
  capabilities = ["list"]
}

# Its own token: learn the TTL, renew it, give it up at exit. The `default` policy grants these
# too; they are repeated so the policy also works for roles created with no_default_policy.
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/revoke-self" {
  capabilities = ["update"]
}

# `rotator check` asks which of the capabilities above this token holds (it writes nothing to
# find out). The answer covers only this token's own capabilities on the paths it names.
path "sys/capabilities-self" {
  capabilities = ["update"]
}
