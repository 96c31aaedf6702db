"""L1 key sources. Each source is built by :func:`rotator.signers.factory.build_signer`."""
