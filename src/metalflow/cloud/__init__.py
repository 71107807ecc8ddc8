"""The metal cloud: the provider's catalogue (metros, plans matched from discovered hardware,
operating systems), capacity, and the tenants' devices, SSH keys and BGP, served as Equinix
Metal's `/metal/v1`."""
