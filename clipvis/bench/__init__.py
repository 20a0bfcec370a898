"""Speed, memory and diagnostic measurements (`clipvis bench ...`), printed as JSON."""
