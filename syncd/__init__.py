"""syncd keeps call-center dialers in step with a CRM."""

__version__ = "0.1.0"
