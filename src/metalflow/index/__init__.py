"""The machine index: what the boot and metadata services know of every machine, in memory."""
