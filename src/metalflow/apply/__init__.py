"""`metalflow apply`: multi-document YAML of metalflow's kinds and Tinkerbell's, in one transaction."""
