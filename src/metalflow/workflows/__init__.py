"""Workflow engine: templates rendered against machines, run action by action by the agent."""
