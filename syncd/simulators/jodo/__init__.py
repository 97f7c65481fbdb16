"""The Avhan Jodo simulator: the API (`api`) and its dialing engine (`dialing`)."""
