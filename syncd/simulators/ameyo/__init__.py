"""The Ameyo simulator: the API (`api`) and its dialing engine (`dialing`)."""
