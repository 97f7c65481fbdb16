"""The uContact simulator: the API (`api`), its dial lists (`dialing`) and wire parsing (`wire`)."""
