"""The only package that talks to the CLOB (and the only one that imports py-clob-client)."""
