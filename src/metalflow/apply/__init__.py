"""`metalflow apply`: multi-document YAML of metalflow's and Tinkerbell's kinds, all or nothing."""
