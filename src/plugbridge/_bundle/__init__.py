"""rustbridge ``.rbp`` bundles: reading, checking and writing them, and minisign signatures."""
