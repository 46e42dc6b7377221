"""Optional bridges to other libraries, each imported only when used: pandas (:mod:`.frames`)."""
