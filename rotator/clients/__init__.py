"""One module per backend SDK: the only importers of botocore (``aws``) and hvac (``vault``)."""
