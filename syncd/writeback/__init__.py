"""Writebacks: outcomes and agent statuses from the state store back into the CRM."""
