"""`report` and `explain`: the catalog for a person to read (an HTML page, one image's verdict)."""
