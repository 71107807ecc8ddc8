"""The metadata service: what an installed OS reads about itself (EC2 and Equinix-style APIs)."""
