"""`metalflow sandbox`: a boot network, VMs and metalflow on one machine, provisioned end to end."""
