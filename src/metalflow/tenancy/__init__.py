"""Who may do what: API tokens, agent tokens, and the one authorisation check."""
