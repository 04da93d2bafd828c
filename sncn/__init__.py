"""sncn."""
